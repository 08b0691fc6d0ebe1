//! The JSON fixtures that the Python client is tested against too: both sides read the same files.

use protocol::{Command, EndpointMetadata};
use serde_json::Value;

fn fixture(name: &str) -> Value {
    // Cargo's run-time CARGO_MANIFEST_DIR: a test binary reused from a clone at another path still
    // carries that path at compile time.
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo");
    let path = std::path::Path::new(&manifest).join("fixtures").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[test]
fn commands_parse_as_the_fixtures_say() {
    let f = fixture("commands.json");
    for case in f["valid"].as_array().unwrap() {
        let bytes = serde_json::to_vec(&case["json"]).unwrap();
        let c = Command::from_json(&bytes).unwrap_or_else(|e| panic!("{}: {e}", case["json"]));
        let (schema, name) = c.table.parts().unwrap();
        assert_eq!(
            (schema, name),
            (
                case["schema"].as_str().unwrap(),
                case["name"].as_str().unwrap()
            )
        );
        // What we write, we read back the same.
        assert_eq!(Command::from_json(&c.to_json()).unwrap(), c);
    }
    for case in f["invalid"].as_array().unwrap() {
        let bytes = serde_json::to_vec(&case["json"]).unwrap();
        let e = Command::from_json(&bytes).expect_err(&case["json"].to_string());
        assert!(
            e.contains(case["says"].as_str().unwrap()),
            "{}: {e}",
            case["json"]
        );
    }
}

#[test]
fn endpoint_metadata_round_trips() {
    for m in fixture("endpoint_metadata.json").as_array().unwrap() {
        let parsed = EndpointMetadata::from_json(m.to_string().as_bytes()).unwrap();
        let back: Value = serde_json::from_str(&parsed.to_json()).unwrap();
        assert_eq!(&back, m, "written form differs from the fixture");
    }
}
