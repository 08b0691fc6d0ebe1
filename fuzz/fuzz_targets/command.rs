//! Any bytes as a CMD descriptor: parsed or refused with a message, never a panic; what parses
//! writes back to JSON that parses to the same command.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::Command;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Command::from_json(data) {
        assert_eq!(Command::from_json(&c.to_json()).as_ref(), Ok(&c));
    }
});
