//! The row messages of `pgoutput` (protocol version 1): Relation, Insert, Update, Delete. The
//! replication client (`pgwire-replication`) frames the stream and parses Begin, Commit and logical
//! decoding messages itself; it hands the rest over as bytes, which this module reads. Parsing never
//! panics: a short or malformed message is an error naming what was missing.

use super::CdcError;

/// A column as the Relation message describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Column name.
    pub name: String,
}

/// A relation's layout, sent before its first change in a session and after each change to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// The relation's oid (a chunk's, for rows of a hypertable).
    pub oid: u32,
    /// Its schema.
    pub schema: String,
    /// Its name.
    pub name: String,
    /// Its columns in the order tuples carry them.
    pub columns: Vec<RelationColumn>,
}

/// One value of a tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// SQL NULL.
    Null,
    /// A TOASTed value the change did not touch: PostgreSQL does not send it.
    Unchanged,
    /// The value in its text form (a session without `binary`).
    Text(&'a [u8]),
    /// The value in its binary send form, as binary COPY carries it.
    Binary(&'a [u8]),
}

/// A row change message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    /// A relation's layout.
    Relation(Relation),
    /// A new row.
    Insert { relation: u32, new: Vec<Value<'a>> },
    /// A changed row: its new values (the old key or row, when sent, is not needed).
    Update { relation: u32, new: Vec<Value<'a>> },
    /// A deleted row: its replica identity key (other columns NULL) or, with REPLICA IDENTITY
    /// FULL, the whole old row.
    Delete { relation: u32, old: Vec<Value<'a>> },
    /// Anything else (Type, Origin, Truncate): nothing for a change stream of rows.
    Other,
}

/// A cursor over one message's bytes.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], CdcError> {
        if self.data.len() < n {
            return Err(CdcError::Protocol(format!(
                "pgoutput message ends inside {what}"
            )));
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &str) -> Result<u8, CdcError> {
        Ok(self.take(1, what)?[0])
    }

    fn i16(&mut self, what: &str) -> Result<i16, CdcError> {
        let b = self.take(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32, CdcError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self, what: &str) -> Result<String, CdcError> {
        let end = self
            .data
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| CdcError::Protocol(format!("pgoutput {what} is not terminated")))?;
        let s = String::from_utf8_lossy(&self.data[..end]).into_owned();
        self.data = &self.data[end + 1..];
        Ok(s)
    }

    fn tuple(&mut self) -> Result<Vec<Value<'a>>, CdcError> {
        let n = self.i16("a tuple's column count")?;
        let n = usize::try_from(n)
            .map_err(|_| CdcError::Protocol(format!("pgoutput tuple has {n} columns")))?;
        let mut values = Vec::with_capacity(n);
        for _ in 0..n {
            values.push(match self.u8("a tuple value's kind")? {
                b'n' => Value::Null,
                b'u' => Value::Unchanged,
                kind @ (b't' | b'b') => {
                    let len = self.u32("a tuple value's length")? as usize;
                    let bytes = self.take(len, "a tuple value")?;
                    if kind == b't' {
                        Value::Text(bytes)
                    } else {
                        Value::Binary(bytes)
                    }
                }
                other => {
                    return Err(CdcError::Protocol(format!(
                        "pgoutput tuple value of unknown kind {other:#04x}"
                    )))
                }
            });
        }
        Ok(values)
    }
}

/// Parses one pgoutput message (the XLogData payload).
pub fn parse(data: &[u8]) -> Result<Message<'_>, CdcError> {
    let mut r = Reader { data };
    Ok(match r.u8("the message type")? {
        b'R' => {
            let oid = r.u32("the relation oid")?;
            let schema = r.string("schema name")?;
            let name = r.string("relation name")?;
            let _replica_identity = r.u8("the replica identity")?;
            let n = r.i16("the column count")?;
            let mut columns = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
            for _ in 0..n.max(0) {
                let _flags = r.u8("column flags")?;
                let name = r.string("column name")?;
                let _type_oid = r.u32("a column's type")?;
                let _typmod = r.u32("a column's type modifier")?;
                columns.push(RelationColumn { name });
            }
            Message::Relation(Relation {
                oid,
                schema,
                name,
                columns,
            })
        }
        b'I' => {
            let relation = r.u32("the relation oid")?;
            expect(&mut r, b'N')?;
            Message::Insert {
                relation,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let relation = r.u32("the relation oid")?;
            let mut tag = r.u8("the tuple tag")?;
            if tag == b'K' || tag == b'O' {
                r.tuple()?;
                tag = r.u8("the tuple tag")?;
            }
            if tag != b'N' {
                return Err(CdcError::Protocol(format!(
                    "pgoutput Update: expected a new tuple, got tag {tag:#04x}"
                )));
            }
            Message::Update {
                relation,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let relation = r.u32("the relation oid")?;
            match r.u8("the tuple tag")? {
                b'K' | b'O' => Message::Delete {
                    relation,
                    old: r.tuple()?,
                },
                tag => {
                    return Err(CdcError::Protocol(format!(
                        "pgoutput Delete: expected a key or old tuple, got tag {tag:#04x}"
                    )))
                }
            }
        }
        _ => Message::Other,
    })
}

fn expect(r: &mut Reader<'_>, tag: u8) -> Result<(), CdcError> {
    let got = r.u8("the tuple tag")?;
    if got == tag {
        Ok(())
    } else {
        Err(CdcError::Protocol(format!(
            "pgoutput: expected tuple tag {:?}, got {got:#04x}",
            tag as char
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn relation() -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend(16_384u32.to_be_bytes());
        m.extend(b"_timescaledb_internal\0_hyper_1_1_chunk\0");
        m.push(b'd');
        m.extend(2i16.to_be_bytes());
        for (name, ty) in [("time", 1184u32), ("v", 701)] {
            m.push(1);
            m.extend(name.as_bytes());
            m.push(0);
            m.extend(ty.to_be_bytes());
            m.extend((-1i32).to_be_bytes());
        }
        m
    }

    #[test]
    fn reads_relation_and_row_messages() {
        let Message::Relation(rel) = parse(&relation()).unwrap() else {
            panic!("a relation")
        };
        assert_eq!(rel.oid, 16_384);
        assert_eq!(rel.name, "_hyper_1_1_chunk");
        assert_eq!(
            rel.columns
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["time", "v"]
        );

        let mut insert = vec![b'I'];
        insert.extend(16_384u32.to_be_bytes());
        insert.push(b'N');
        insert.extend(2i16.to_be_bytes());
        insert.push(b'b');
        insert.extend(2u32.to_be_bytes());
        insert.extend([7, 8]);
        insert.push(b'n');
        assert_eq!(
            parse(&insert).unwrap(),
            Message::Insert {
                relation: 16_384,
                new: vec![Value::Binary(&[7, 8]), Value::Null]
            }
        );

        // An update with the old key first, then the new row.
        let mut update = vec![b'U'];
        update.extend(9u32.to_be_bytes());
        update.push(b'K');
        update.extend(1i16.to_be_bytes());
        update.push(b'n');
        update.push(b'N');
        update.extend(1i16.to_be_bytes());
        update.push(b'u');
        assert_eq!(
            parse(&update).unwrap(),
            Message::Update {
                relation: 9,
                new: vec![Value::Unchanged]
            }
        );
    }

    #[test]
    fn truncated_messages_are_errors() {
        let rel = relation();
        for cut in 0..rel.len() {
            assert!(parse(&rel[..cut]).is_err(), "cut at {cut}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse(&data);
        }

        #[test]
        fn never_panics_on_row_messages(tag in prop_oneof![Just(b'I'), Just(b'U'), Just(b'D'), Just(b'R')],
                                        rest in proptest::collection::vec(any::<u8>(), 0..128)) {
            let mut data = vec![tag];
            data.extend(rest);
            let _ = parse(&data);
        }
    }
}
