//! `hyperflight cdc setup` and `teardown`: the publication and the slot a change stream reads.
//!
//! A hypertable's rows live in its chunks, and chunks are created as data arrives, so the
//! publication covers the schema the chunks are made in (`FOR TABLES IN SCHEMA`, usually
//! `_timescaledb_internal`), which also covers chunks created later. Chunks copy their hypertable's
//! replica identity when they are made.
//!
//! Publishing updates and deletes makes PostgreSQL refuse every UPDATE and DELETE on a covered table
//! without a usable replica identity ("cannot update table … because it does not have a replica
//! identity and publishes updates"). The schema holds the chunks of *every* hypertable whose chunks
//! go there, and continuous aggregates' materialization chunks, so set-up checks all of them and
//! refuses, naming each and the `ALTER TABLE … REPLICA IDENTITY FULL` that makes it safe, unless
//! only inserts are published (which never needs a replica identity). Not checked: TimescaleDB's
//! own tables in that schema (extension members, written by its catalog code, which does not check
//! replica identity) and compressed-chunk tables (written only by TimescaleDB's compression code,
//! likewise; a DELETE on a compressed row under such a publication was tested to succeed).

use std::collections::BTreeMap;

use pgarrow::quote_ident;
use tokio_postgres::Client;

use super::CdcError;

/// What the publication publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Publish {
    /// Inserts, updates and deletes: needs a replica identity on every covered table.
    All,
    /// Inserts only: safe for any table; updates and deletes are not captured.
    Inserts,
}

/// What to set up.
#[derive(Debug, Clone)]
pub struct SetupRequest {
    /// Tables to capture: hypertables (their chunk schema is published) or plain tables, as
    /// `schema.table` (quoted parts allowed, as PostgreSQL's `regclass` reads them).
    pub tables: Vec<String>,
    /// The publication's name.
    pub publication: String,
    /// The logical replication slot's name.
    pub slot: String,
    /// What is published.
    pub publish: Publish,
}

/// What set-up did.
#[derive(Debug, Clone)]
pub struct SetupReport {
    /// The statements run, in order.
    pub statements: Vec<String>,
    /// The slot's consistent point: changes committed after it are streamed.
    pub slot_lsn: String,
}

/// A table that would break under the publication, and the statement that makes it safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsafe {
    /// The hypertable or table, quoted.
    pub table: String,
    /// Why.
    pub reason: String,
}

impl Unsafe {
    /// The statement that gives it a replica identity covering every column.
    pub fn fix(&self) -> String {
        format!("ALTER TABLE {} REPLICA IDENTITY FULL;", self.table)
    }
}

/// Creates the publication and the slot, after checking that nothing the publication covers would
/// make a user's UPDATE or DELETE fail. `client` must be allowed to write (not a read-only session).
pub async fn setup(client: &Client, req: &SetupRequest) -> Result<SetupReport, CdcError> {
    check_server(client).await?;
    if req.tables.is_empty() {
        return Err(CdcError::Refused(
            "name at least one table to capture (--tables)".into(),
        ));
    }
    let (schemas, plain) = resolve(client, &req.tables).await?;
    if exists(
        client,
        "pg_catalog.pg_publication",
        "pubname",
        &req.publication,
    )
    .await?
    {
        return Err(CdcError::Refused(format!(
            "publication {:?} exists already: run `hyperflight cdc teardown` first, or choose another name",
            req.publication
        )));
    }
    if exists(
        client,
        "pg_catalog.pg_replication_slots",
        "slot_name",
        &req.slot,
    )
    .await?
    {
        return Err(CdcError::Refused(format!(
            "replication slot {:?} exists already: run `hyperflight cdc teardown` first, or choose another name",
            req.slot
        )));
    }
    if req.publish == Publish::All {
        let blockers = unsafe_tables(client, &schemas, &plain).await?;
        if !blockers.is_empty() {
            return Err(CdcError::Refused(refusal(&blockers)));
        }
    }
    let mut targets: Vec<String> = schemas
        .iter()
        .map(|s| format!("TABLES IN SCHEMA {}", quote_ident(s)))
        .collect();
    targets.extend(plain.keys().map(|t| format!("TABLE {t}")));
    let publish = match req.publish {
        Publish::All => "insert, update, delete",
        Publish::Inserts => "insert",
    };
    let create = format!(
        "CREATE PUBLICATION {} FOR {} WITH (publish = '{publish}')",
        quote_ident(&req.publication),
        targets.join(", ")
    );
    client.batch_execute(&create).await?;
    // A slot cannot be made in a transaction that wrote, so the publication is committed first and
    // dropped again if the slot cannot be made.
    let slot = client
        .query_one(
            "SELECT lsn::text FROM pg_catalog.pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&req.slot],
        )
        .await;
    let slot_lsn: String = match slot {
        Ok(row) => row.get(0),
        Err(e) => {
            let drop = format!("DROP PUBLICATION {}", quote_ident(&req.publication));
            if let Err(undo) = client.batch_execute(&drop).await {
                tracing::warn!(
                    "could not drop the publication again after the slot failed: {undo}"
                );
            }
            return Err(e.into());
        }
    };
    Ok(SetupReport {
        statements: vec![
            create,
            format!(
                "SELECT pg_create_logical_replication_slot({}, 'pgoutput')",
                literal(&req.slot)
            ),
        ],
        slot_lsn,
    })
}

/// Drops the slot (which frees the WAL it retains) and the publication; either may be missing.
/// Returns what was dropped. A slot that a stream is reading is refused, naming the process.
pub async fn teardown(
    client: &Client,
    publication: &str,
    slot: &str,
) -> Result<Vec<String>, CdcError> {
    let mut done = Vec::new();
    let row = client
        .query_opt(
            "SELECT active_pid FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    if let Some(row) = row {
        if let Some(pid) = row.get::<_, Option<i32>>(0) {
            return Err(CdcError::Refused(format!(
                "replication slot {slot:?} is in use by process {pid}: stop the stream reading it first"
            )));
        }
        client
            .execute("SELECT pg_catalog.pg_drop_replication_slot($1)", &[&slot])
            .await?;
        done.push(format!("dropped replication slot {slot:?}"));
    }
    if exists(client, "pg_catalog.pg_publication", "pubname", publication).await? {
        client
            .batch_execute(&format!("DROP PUBLICATION {}", quote_ident(publication)))
            .await?;
        done.push(format!("dropped publication {publication:?}"));
    }
    Ok(done)
}

/// Logical decoding must be on, and TimescaleDB must mark its compression moves in the WAL (without
/// the markers, compressing a chunk would look like users deleting and inserting its rows).
async fn check_server(client: &Client) -> Result<(), CdcError> {
    let row = client
        .query_one(
            "SELECT current_setting('wal_level'),
                    EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'timescaledb'),
                    current_setting('timescaledb.enable_compression_wal_markers', true)",
            &[],
        )
        .await?;
    let (wal_level, timescaledb, markers): (String, bool, Option<String>) =
        (row.get(0), row.get(1), row.get(2));
    if wal_level != "logical" {
        return Err(CdcError::Refused(format!(
            "wal_level is {wal_level}: change capture needs logical decoding \
             (ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL)"
        )));
    }
    if timescaledb && markers.as_deref() != Some("on") {
        return Err(CdcError::Refused(
            "timescaledb.enable_compression_wal_markers is off: compressing or decompressing a \
             chunk would look like users deleting and inserting its rows \
             (ALTER SYSTEM SET timescaledb.enable_compression_wal_markers = on; SELECT pg_reload_conf();)"
                .into(),
        ));
    }
    Ok(())
}

/// The chunk schemas of the named hypertables and the named plain tables (quoted name → oid).
async fn resolve(
    client: &Client,
    tables: &[String],
) -> Result<(Vec<String>, BTreeMap<String, u32>), CdcError> {
    let timescaledb: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'timescaledb')",
            &[],
        )
        .await?
        .get(0);
    let chunk_schema = if timescaledb {
        "(SELECT h.associated_schema_name::text FROM _timescaledb_catalog.hypertable h
           WHERE h.schema_name = n.nspname AND h.table_name = c.relname)"
    } else {
        "NULL::text"
    };
    let sql = format!(
        "SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname), c.relkind::text,
                {chunk_schema}
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.oid = pg_catalog.to_regclass($1)"
    );
    let mut schemas = Vec::new();
    let mut plain = BTreeMap::new();
    for name in tables {
        let row = client.query_opt(&sql, &[name]).await?.ok_or_else(|| {
            CdcError::Refused(format!("no table {name:?} (give it as schema.table)"))
        })?;
        let (oid, quoted, kind, chunk_schema): (u32, String, String, Option<String>) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        match (chunk_schema, kind.as_str()) {
            (Some(schema), _) => {
                if !schemas.contains(&schema) {
                    schemas.push(schema);
                }
            }
            (None, "r") => {
                plain.insert(quoted, oid);
            }
            (None, _) => {
                return Err(CdcError::Refused(format!(
                    "{quoted} is not a hypertable or a plain table: only those can be captured"
                )))
            }
        }
    }
    Ok((schemas, plain))
}

/// Hypertables (whose present and future chunks the publication covers) and tables without a usable
/// replica identity: REPLICA IDENTITY NOTHING, or DEFAULT without a primary key. A hypertable is
/// named for its chunks, since the fix is made on it and reaches every chunk.
async fn unsafe_tables(
    client: &Client,
    schemas: &[String],
    plain: &BTreeMap<String, u32>,
) -> Result<Vec<Unsafe>, CdcError> {
    let timescaledb: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'timescaledb')",
            &[],
        )
        .await?
        .get(0);
    let plain_oids: Vec<u32> = plain.values().copied().collect();
    // Every covered relation, named by the hypertable it belongs to (itself when it is none).
    let owner = if timescaledb {
        "(SELECT format('%I.%I', h.schema_name, h.table_name) FROM _timescaledb_catalog.chunk ch
            JOIN _timescaledb_catalog.hypertable h ON h.id = ch.hypertable_id
           WHERE ch.schema_name = n.nspname AND ch.table_name = c.relname)"
    } else {
        "NULL::text"
    };
    let compressed = if timescaledb {
        "SELECT format('%I.%I', ch.schema_name, ch.table_name) FROM _timescaledb_catalog.chunk ch
           JOIN _timescaledb_catalog.hypertable h ON h.id = ch.hypertable_id
          WHERE h.id IN (SELECT compressed_hypertable_id FROM _timescaledb_catalog.hypertable)
         UNION ALL
         SELECT format('%I.%I', h.schema_name, h.table_name) FROM _timescaledb_catalog.hypertable h
          WHERE h.id IN (SELECT compressed_hypertable_id FROM _timescaledb_catalog.hypertable)"
    } else {
        "SELECT NULL::text WHERE false"
    };
    let future = if timescaledb {
        // Hypertables whose next chunks are made in a published schema.
        "UNION SELECT c.oid FROM _timescaledb_catalog.hypertable h
           JOIN pg_catalog.pg_namespace n ON n.nspname = h.schema_name
           JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = h.table_name
          WHERE h.associated_schema_name = ANY ($1)"
    } else {
        ""
    };
    let sql = format!(
        "WITH covered AS (
             SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = ANY ($1) AND c.relkind IN ('r', 'p')
                AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                                 WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
                                   AND d.deptype = 'e')
             UNION SELECT unnest($2::oid[])
             {future})
         SELECT coalesce({owner}, format('%I.%I', n.nspname, c.relname)),
                c.relreplident::text
         FROM covered v
         JOIN pg_catalog.pg_class c ON c.oid = v.oid
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE format('%I.%I', n.nspname, c.relname) NOT IN ({compressed})
           AND (c.relreplident = 'n'
                OR (c.relreplident = 'd' AND NOT EXISTS (
                      SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)))
         ORDER BY 1"
    );
    let rows = client.query(&sql, &[&schemas, &plain_oids]).await?;
    let mut out: Vec<Unsafe> = Vec::new();
    for row in rows {
        let (table, identity): (String, String) = (row.get(0), row.get(1));
        if out.last().is_some_and(|u| u.table == table) {
            continue;
        }
        let reason = if identity == "n" {
            "REPLICA IDENTITY NOTHING".to_string()
        } else {
            "no primary key and REPLICA IDENTITY DEFAULT (or a chunk of it without one)".to_string()
        };
        out.push(Unsafe { table, reason });
    }
    Ok(out)
}

/// The refusal: each table, why, the statements that make it safe, and the alternative.
fn refusal(blockers: &[Unsafe]) -> String {
    let mut text = String::from(
        "refused: publishing updates and deletes would make every UPDATE and DELETE on these \
         tables fail (PostgreSQL requires a replica identity on tables that publish them):\n",
    );
    for b in blockers {
        text.push_str(&format!("  {}: {}\n", b.table, b.reason));
    }
    text.push_str("Either give them a replica identity (it reaches existing and future chunks):\n");
    for b in blockers {
        text.push_str(&format!("  {}\n", b.fix()));
    }
    text.push_str("or capture inserts only: --publish inserts");
    text
}

async fn exists(client: &Client, table: &str, column: &str, name: &str) -> Result<bool, CdcError> {
    Ok(client
        .query_one(
            &format!("SELECT EXISTS (SELECT 1 FROM {table} WHERE {column} = $1)"),
            &[&name],
        )
        .await?
        .get(0))
}

/// A SQL string literal (for the statements shown to the user).
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
