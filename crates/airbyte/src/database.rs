//! Direct SQL, in the in-process mode only (with `flight_url` the source never connects to
//! PostgreSQL): connecting with a message a person understands, and what `check` reports
//! (TimescaleDB's version, missing schemas). Catalog facts (time dimension, primary key) come from
//! the Flight service, never from here.

use crate::config::DatabaseSettings;
use crate::Error;

/// A connected session; the connection task ends when this is dropped.
pub struct Database {
    client: tokio_postgres::Client,
}

impl Database {
    /// Connects as configured (TLS, tunnel, credentials); failures become [`Error::Database`] with
    /// what to fix (wrong password, unknown role or database, TLS trust, host unreachable).
    pub async fn connect(config: &DatabaseSettings) -> Result<Database, Error> {
        let client = config
            .connector()?
            .connect()
            .await
            .map_err(|e| Error::Database {
                message: format!("cannot connect to PostgreSQL at {}: {e}", config.target()),
                // Unreachable hosts are a config problem at check time, but may be a blip during
                // a read: transient ones are retried by the platform.
                config: !e.is_transient(),
            })?;
        Ok(Database { client })
    }

    /// The installed TimescaleDB version, if the extension is present.
    pub async fn timescaledb_version(&self) -> Result<Option<String>, Error> {
        let row = self
            .client
            .query_opt(
                "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'timescaledb'",
                &[],
            )
            .await
            .map_err(query_error)?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Which of `schemas` do not exist.
    pub async fn missing_schemas(&self, schemas: &[String]) -> Result<Vec<String>, Error> {
        let rows = self
            .client
            .query(
                "SELECT s FROM unnest($1::text[]) AS s
                 WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n WHERE n.nspname = s)",
                &[&schemas],
            )
            .await
            .map_err(query_error)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}

/// What a CDC read needs to know of the server, its slot and its publication.
#[derive(Debug)]
pub struct CdcStatus {
    /// The slot, if it exists.
    pub slot: Option<Slot>,
    /// The server's WAL insert position now (past every commit so far, also those not yet
    /// written out with `synchronous_commit = off`): a read stops once it has decoded this far.
    pub wal_lsn: u64,
}

/// A replication slot.
#[derive(Debug)]
pub struct Slot {
    /// The process reading it, if one is.
    pub active_pid: Option<i32>,
    /// How far its consumer acknowledged: its WAL before this may be gone.
    pub confirmed_flush: Option<u64>,
    /// Its output plugin (`None` for a physical slot).
    pub plugin: Option<String>,
}

impl Database {
    /// Checks the server can capture changes (`wal_level`, the publication) and reads the slot.
    pub async fn cdc_status(&self, slot: &str, publication: &str) -> Result<CdcStatus, Error> {
        let row = self
            .client
            .query_one(
                "SELECT current_setting('wal_level'),
                        EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $2),
                        (pg_catalog.pg_current_wal_insert_lsn() - '0/0')::bigint,
                        s.active_pid, (s.confirmed_flush_lsn - '0/0')::bigint, s.plugin::text,
                        s.slot_name IS NOT NULL
                 FROM (SELECT 1) AS one
                 LEFT JOIN pg_catalog.pg_replication_slots s ON s.slot_name = $1",
                &[&slot, &publication],
            )
            .await
            .map_err(query_error)?;
        let config =
            |setting: &'static str, message: String| Error::InvalidConfig { setting, message };
        let wal_level: String = row.get(0);
        if wal_level != "logical" {
            return Err(config(
                "replication_method",
                format!("wal_level is {wal_level}: CDC needs logical decoding (ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL)"),
            ));
        }
        if !row.get::<_, bool>(1) {
            return Err(config(
                "publication",
                format!("publication {publication:?} does not exist: make it with `hyperflight cdc setup` (or CREATE PUBLICATION)"),
            ));
        }
        let lsn = |v: Option<i64>| v.map(|v| v as u64);
        let found = row.get::<_, bool>(6).then(|| Slot {
            active_pid: row.get(3),
            confirmed_flush: lsn(row.get(4)),
            plugin: row.get(5),
        });
        if let Some(Slot { plugin: p, .. }) = &found {
            if p.as_deref() != Some("pgoutput") {
                return Err(config(
                    "replication_slot",
                    format!("slot {slot:?} is not a logical slot of plugin pgoutput ({p:?})"),
                ));
            }
        }
        Ok(CdcStatus {
            slot: found,
            wal_lsn: lsn(row.get(2)).unwrap_or(0),
        })
    }

    /// Which of `tables` (schema, name) `publication` does not cover: a table itself, or a
    /// hypertable whose chunk schema is published (its chunks, later ones included, are).
    pub async fn unpublished(
        &self,
        publication: &str,
        tables: &[(String, String)],
    ) -> Result<Vec<String>, Error> {
        let row = self
            .client
            .query_one(
                "SELECT current_setting('server_version_num')::int >= 150000,
                        EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'timescaledb')",
                &[],
            )
            .await
            .map_err(query_error)?;
        // Schemas are published (FOR TABLES IN SCHEMA) from PostgreSQL 15 on.
        let by_schema = if row.get(0) && row.get(1) {
            "OR EXISTS (SELECT 1 FROM _timescaledb_catalog.hypertable h
                          JOIN pg_catalog.pg_namespace n ON n.nspname = h.associated_schema_name
                          JOIN pg_catalog.pg_publication_namespace pn ON pn.pnnspid = n.oid
                          JOIN pg_catalog.pg_publication p ON p.oid = pn.pnpubid
                         WHERE p.pubname = $1 AND h.schema_name = x.s AND h.table_name = x.t)"
        } else {
            ""
        };
        let (schemas, names): (Vec<&str>, Vec<&str>) =
            tables.iter().map(|(s, t)| (s.as_str(), t.as_str())).unzip();
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT format('%I.%I', x.s, x.t) FROM unnest($2::text[], $3::text[]) AS x(s, t)
                     WHERE NOT (EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables p
                                         WHERE p.pubname = $1 AND p.schemaname = x.s
                                           AND p.tablename = x.t)
                                {by_schema})"
                ),
                &[&publication, &schemas, &names],
            )
            .await
            .map_err(query_error)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Drops an idle slot (a first sync makes it again, exporting its snapshot).
    pub async fn drop_slot(&self, slot: &str) -> Result<(), Error> {
        self.client
            .execute("SELECT pg_catalog.pg_drop_replication_slot($1)", &[&slot])
            .await
            .map_err(query_error)?;
        Ok(())
    }
}

/// A failed catalog query. Connection-class failures are transient; anything else is reported as
/// is (these queries read only the catalog, so the message is about the database, not the data).
fn query_error(e: tokio_postgres::Error) -> Error {
    let transient = e.is_closed()
        || e.code().is_none_or(|c| {
            c.code().starts_with("08") || c.code().starts_with("57") || c.code().starts_with("53")
        });
    Error::Database {
        message: format!(
            "catalog query failed: {}",
            e.as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_else(|| e.to_string())
        ),
        config: !transient,
    }
}
