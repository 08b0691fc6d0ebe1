//! Any bytes as a binary COPY stream, for a column list chosen by the first byte, pushed in pieces
//! whose sizes come from the second: errors are fine, panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgarrow::{plan_column, BatchLimits, ColumnPlan, CopyDecoder, PgType};

fn plans(choice: u8) -> Vec<ColumnPlan> {
    // bool, int2/4/8, float4/8, numeric, text, bytea, date, time, timestamp(tz), interval, uuid,
    // json, jsonb, and arrays of int4 and jsonb.
    let scalars = [16u32, 21, 23, 20, 700, 701, 1700, 25, 17, 1082, 1083, 1114, 1184, 1186, 2950, 114, 3802];
    let mut out: Vec<ColumnPlan> = scalars
        .iter()
        .filter(|&&oid| choice == 0 || oid % 7 != u32::from(choice % 7))
        .map(|&oid| {
            let typmod = if oid == 1700 && choice % 2 == 1 { (10 << 16) + 4 + 4 } else { -1 };
            plan_column(&format!("c{oid}"), &PgType { oid, typmod, elem_oid: None, is_enum: false })
        })
        .collect();
    for elem in [23u32, 3802] {
        out.push(plan_column("arr", &PgType { oid: 0, typmod: -1, elem_oid: Some(elem), is_enum: false }));
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let [choice, step, rest @ ..] = data else { return };
    let plans = plans(*choice);
    let limits = BatchLimits { rows: 1 + usize::from(*step % 5), bytes: 64 };
    let mut decoder = CopyDecoder::new(&plans, choice & 0x80 != 0, limits);
    for piece in rest.chunks(1 + usize::from(*step)) {
        if decoder.push(piece).is_err() {
            return;
        }
        while decoder.next_batch().is_some() {}
    }
    let _ = decoder.finish();
});
