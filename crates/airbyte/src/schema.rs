//! Arrow field → Airbyte JSON Schema: the one table that says what a column becomes in a record.
//! [`crate::record`] writes values exactly as described here.
//!
//! | Arrow (from PostgreSQL)                         | JSON Schema                                                  | value in `data` |
//! |-------------------------------------------------|--------------------------------------------------------------|-----------------|
//! | Boolean                                         | `boolean`                                                    | `true` / `false` |
//! | Int16, Int32, Int64 (int2/int4/int8)            | `integer`                                                    | number |
//! | Float32, Float64 (float4/float8)                | `number`                                                     | shortest round-trip number; NaN and ±Infinity are `null`, listed in `meta.changes` |
//! | Decimal128(p,s) (numeric(p,s))                  | `number`                                                     | the exact decimal digits (`12.50`), never via a float |
//! | Utf8 (text, varchar, enums, unconstrained numeric, json/jsonb, `::text` casts) | `string`       | escaped text; json/jsonb as their JSON text; unconstrained numeric as exact text |
//! | Binary (bytea)                                  | `string` + `contentEncoding: base64`                         | base64 (standard alphabet, padded) |
//! | FixedSizeBinary(16) `arrow.uuid` (uuid)         | `string` + `format: uuid`                                    | `8-4-4-4-12` lower-case hex |
//! | Date32 (date)                                   | `string` + `format: date`                                    | `YYYY-MM-DD`, ` BC` appended before year 1 |
//! | Time64(µs) (time)                               | `string` + `format: time` + `airbyte_type: time_without_timezone` | `HH:MM:SS.ffffff` |
//! | Timestamp(µs, UTC) (timestamptz)                | `string` + `format: date-time` + `airbyte_type: timestamp_with_timezone` | `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC) |
//! | Timestamp(µs, None) (timestamp)                 | `string` + `format: date-time` + `airbyte_type: timestamp_without_timezone` | `YYYY-MM-DDTHH:MM:SS.ffffff` |
//! | Interval(MonthDayNano) (interval)               | `string`                                                     | ISO 8601 duration, `P1Y2M3DT4H5M6.5S` |
//! | List (one-dimensional arrays)                   | `array` + `items` of the element                             | JSON array |
//!
//! These are exactly the types the server emits (`pgarrow::types::plan_column`); [`crate::record`]
//! refuses any other. Every type is `["null", <type>]`: the server's fields are all nullable.
//! Fractions have six digits (µs). A float NaN or ±Infinity (also inside an array), a date or
//! timestamp of `±infinity` (the type's extreme value), and an infinite interval, have no JSON form
//! that fits the declared type: the value is written as `null` and the record's `meta.changes` lists
//! the field as `NULLED` / `SOURCE_SERIALIZATION_ERROR`. So every record validates against its
//! stream's schema. Years after 9999 are
//! written with more than four digits.

use arrow::datatypes::{DataType, Field, Schema};
use serde_json::{json, Map, Value};

/// The Arrow extension name of a field, if any.
pub fn extension(field: &Field) -> Option<&str> {
    field
        .metadata()
        .get("ARROW:extension:name")
        .map(String::as_str)
}

/// The JSON Schema of one field (nullable).
pub fn field_schema(field: &Field) -> Value {
    let mut s = match field.data_type() {
        DataType::Boolean => json!({"type": "boolean"}),
        DataType::Int16 | DataType::Int32 | DataType::Int64 => json!({"type": "integer"}),
        DataType::Float32 | DataType::Float64 | DataType::Decimal128(..) => {
            json!({"type": "number"})
        }
        DataType::FixedSizeBinary(16) if extension(field) == Some("arrow.uuid") => {
            json!({"type": "string", "format": "uuid"})
        }
        DataType::Binary => json!({"type": "string", "contentEncoding": "base64"}),
        DataType::Date32 => json!({"type": "string", "format": "date"}),
        DataType::Time64(_) => json!({
            "type": "string", "format": "time", "airbyte_type": "time_without_timezone",
        }),
        DataType::Timestamp(_, Some(_)) => json!({
            "type": "string", "format": "date-time", "airbyte_type": "timestamp_with_timezone",
        }),
        DataType::Timestamp(_, None) => json!({
            "type": "string", "format": "date-time", "airbyte_type": "timestamp_without_timezone",
        }),
        DataType::List(item) => json!({"type": "array", "items": field_schema(item)}),
        // Utf8, and types the server never emits (which `read` refuses).
        _ => json!({"type": "string"}),
    };
    if let Some(ty) = s.get("type").and_then(Value::as_str).map(str::to_string) {
        s["type"] = json!(["null", ty]);
    }
    s
}

/// The JSON Schema of a record's `data`: an object with one property per column.
pub fn stream_schema(schema: &Schema) -> Value {
    let properties: Map<String, Value> = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), field_schema(f)))
        .collect();
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": properties,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::TimeUnit;
    use std::collections::HashMap;
    use std::sync::Arc;

    #[test]
    fn types_carry_airbyte_annotations() {
        let f = |dt: DataType| field_schema(&Field::new("c", dt, true));
        assert_eq!(f(DataType::Int64), json!({"type": ["null", "integer"]}));
        assert_eq!(
            f(DataType::Timestamp(
                TimeUnit::Microsecond,
                Some("UTC".into())
            )),
            json!({"type": ["null", "string"], "format": "date-time",
                   "airbyte_type": "timestamp_with_timezone"})
        );
        assert_eq!(
            f(DataType::Timestamp(TimeUnit::Microsecond, None))["airbyte_type"],
            "timestamp_without_timezone"
        );
        assert_eq!(f(DataType::Date32)["format"], "date");
        assert_eq!(
            f(DataType::Time64(TimeUnit::Microsecond))["airbyte_type"],
            "time_without_timezone"
        );
        assert_eq!(f(DataType::Decimal128(10, 2))["type"][1], "number");
        assert_eq!(f(DataType::Binary)["contentEncoding"], "base64");
        let list = f(DataType::List(Arc::new(Field::new(
            "item",
            DataType::Int32,
            true,
        ))));
        assert_eq!(list["type"], json!(["null", "array"]));
        assert_eq!(list["items"]["type"], json!(["null", "integer"]));
        let uuid = Field::new("u", DataType::FixedSizeBinary(16), true).with_metadata(
            HashMap::from([("ARROW:extension:name".into(), "arrow.uuid".into())]),
        );
        assert_eq!(field_schema(&uuid)["format"], "uuid");
    }
}
