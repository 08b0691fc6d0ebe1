//! Signed Flight tickets: what one endpoint reads and where to resume.
//!
//! A ticket is `SignedTicket { body, mac }` (see `proto/hyperflight.proto`) where `mac` is
//! HMAC-SHA256 over the encoded [`TicketBody`]. [`TicketSigner::verify`] checks the MAC in constant
//! time *before* decoding the body, then checks version and expiry; nothing in a ticket is trusted
//! until then. Decoding never panics, whatever the bytes.
//!
//! ```
//! use ticket::{TicketBody, TicketSigner};
//! let signer = TicketSigner::new(b"0123456789abcdef0123456789abcdef".to_vec());
//! let body = TicketBody { table_schema: "public".into(), table_name: "metrics".into(),
//!                         expires_at_ms: i64::MAX, ..TicketBody::current() };
//! let bytes = signer.sign(&body);
//! assert_eq!(signer.verify(&bytes, 0).unwrap(), body);
//! assert!(signer.verify(b"garbage", 0).is_err());
//! ```

use bytes::Bytes;
use hmac::{Hmac, Mac};
use prost::Message;
use sha2::Sha256;

/// Messages generated from `proto/hyperflight.proto`.
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/hyperflight.rs"));
}

pub use proto::{BatchPosition, BlockRange, QueryColumn, TicketBody, Tid, TimeBounds};

// A heap position as the decoder reports it and as a ticket carries it. Offsets fit u16 in both
// directions because this server only signs offsets it read from a u16.
impl From<pgarrow::Tid> for Tid {
    fn from(t: pgarrow::Tid) -> Self {
        Tid {
            block: t.block,
            offset: u32::from(t.offset),
        }
    }
}

impl From<&Tid> for pgarrow::Tid {
    fn from(t: &Tid) -> Self {
        pgarrow::Tid {
            block: t.block,
            offset: t.offset as u16,
        }
    }
}

impl QueryColumn {
    /// A result column as PostgreSQL describes it.
    pub fn new(name: &str, pg_type: &pgarrow::PgType) -> Self {
        QueryColumn {
            name: name.to_string(),
            oid: pg_type.oid,
            typmod: pg_type.typmod,
            is_enum: pg_type.is_enum,
            elem_oid: pg_type.elem_oid,
        }
    }

    /// The type the column is decoded as.
    pub fn pg_type(&self) -> pgarrow::PgType {
        pgarrow::PgType {
            oid: self.oid,
            typmod: self.typmod,
            is_enum: self.is_enum,
            elem_oid: self.elem_oid,
        }
    }
}

/// The ticket format this server writes and accepts.
pub const TICKET_VERSION: u32 = 1;

type HmacSha256 = Hmac<Sha256>;

/// Why a ticket was refused. Every variant is the client's fault (INVALID_ARGUMENT).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TicketError {
    /// Not a ticket this server wrote: undecodable envelope.
    #[error("malformed ticket")]
    Malformed,
    /// The MAC does not match: forged, corrupted or signed with another secret.
    #[error("ticket signature does not verify (forged, corrupted, or issued by a server with another ticket_secret)")]
    BadSignature,
    /// Signed by us but of a format version we do not read.
    #[error("unsupported ticket version {0}")]
    UnsupportedVersion(u32),
    /// Past its expiry.
    #[error("ticket expired; call GetFlightInfo again for fresh tickets")]
    Expired,
}

impl TicketBody {
    /// An empty body of the current version, to fill with struct update syntax.
    pub fn current() -> Self {
        TicketBody {
            version: TICKET_VERSION,
            ..Default::default()
        }
    }
}

/// Signs and verifies tickets with the server's `ticket_secret`.
#[derive(Clone)]
pub struct TicketSigner {
    key: HmacSha256,
}

impl std::fmt::Debug for TicketSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketSigner(..)")
    }
}

impl TicketSigner {
    /// A signer keyed with `secret` (any length; config validation asks for at least 16 bytes).
    pub fn new(secret: Vec<u8>) -> Self {
        let key = HmacSha256::new_from_slice(&secret).expect("HMAC accepts keys of any length");
        TicketSigner { key }
    }

    /// Encodes and signs `body`.
    pub fn sign(&self, body: &TicketBody) -> Bytes {
        self.sign_bytes(&body.encode_to_vec())
    }

    /// Signs already encoded body bytes (the fuzz target signs arbitrary bytes, so that decoding
    /// past the MAC check is fuzzed too).
    pub fn sign_bytes(&self, body: &[u8]) -> Bytes {
        let mut mac = self.key.clone();
        mac.update(body);
        let mac = mac.finalize().into_bytes().to_vec();
        proto::SignedTicket {
            body: body.to_vec(),
            mac,
        }
        .encode_to_vec()
        .into()
    }

    /// Checks signature, version and expiry (against `now_ms`, ms since the Unix epoch) and returns
    /// the body.
    pub fn verify(&self, ticket: &[u8], now_ms: i64) -> Result<TicketBody, TicketError> {
        let signed = proto::SignedTicket::decode(ticket).map_err(|_| TicketError::Malformed)?;
        let mut mac = self.key.clone();
        mac.update(&signed.body);
        mac.verify_slice(&signed.mac)
            .map_err(|_| TicketError::BadSignature)?;
        let body =
            TicketBody::decode(signed.body.as_slice()).map_err(|_| TicketError::Malformed)?;
        if body.version != TICKET_VERSION {
            return Err(TicketError::UnsupportedVersion(body.version));
        }
        if body.expires_at_ms <= now_ms {
            return Err(TicketError::Expired);
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn signer() -> TicketSigner {
        TicketSigner::new(b"test-secret-test-secret".to_vec())
    }

    fn body() -> TicketBody {
        TicketBody {
            table_schema: "public".into(),
            table_name: "metrics".into(),
            scan_schema: "_timescaledb_internal".into(),
            scan_name: "_hyper_1_1_chunk".into(),
            relfilenode: 16_384,
            columns: vec!["time".into(), "reading".into()],
            bounds: Some(TimeBounds {
                column: "time".into(),
                start: Some(1),
                end: None,
            }),
            resume_after: Some(Tid {
                block: 7,
                offset: 3,
            }),
            expires_at_ms: 2_000,
            ..TicketBody::current()
        }
    }

    #[test]
    fn round_trips() {
        let s = signer();
        assert_eq!(s.verify(&s.sign(&body()), 1_999), Ok(body()));
    }

    #[test]
    fn expired_at_and_after_expiry() {
        let s = signer();
        let t = s.sign(&body());
        assert_eq!(s.verify(&t, 2_000), Err(TicketError::Expired));
        assert_eq!(s.verify(&t, 5_000), Err(TicketError::Expired));
    }

    #[test]
    fn every_flipped_byte_is_rejected() {
        let s = signer();
        let t = s.sign(&body()).to_vec();
        for i in 0..t.len() {
            let mut bad = t.clone();
            bad[i] ^= 0x01;
            assert!(s.verify(&bad, 0).is_err(), "flip at byte {i} accepted");
        }
    }

    #[test]
    fn other_secret_is_bad_signature() {
        let t = signer().sign(&body());
        let other = TicketSigner::new(b"another-secret-entirely".to_vec());
        assert_eq!(other.verify(&t, 0), Err(TicketError::BadSignature));
    }

    #[test]
    fn unknown_version_is_rejected_after_signature() {
        let s = signer();
        let t = s.sign(&TicketBody {
            version: 99,
            ..body()
        });
        assert_eq!(s.verify(&t, 0), Err(TicketError::UnsupportedVersion(99)));
    }

    #[test]
    fn garbage_is_malformed_or_unsigned() {
        let s = signer();
        assert_eq!(s.verify(b"", 0), Err(TicketError::BadSignature));
        assert_eq!(s.verify(b"\xff\xff\xff", 0), Err(TicketError::Malformed));
        assert!(s.verify(b"garbage", 0).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2_000, .. ProptestConfig::default() })]
        #[test]
        fn arbitrary_bytes_never_verify(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            prop_assert!(signer().verify(&bytes, 0).is_err());
        }

        #[test]
        fn mutated_tickets_never_verify(pos in any::<prop::sample::Index>(), xor in 1u8..=255) {
            let s = signer();
            let mut t = s.sign(&body()).to_vec();
            let i = pos.index(t.len());
            t[i] ^= xor;
            prop_assert!(s.verify(&t, 0).is_err());
        }
    }
}
