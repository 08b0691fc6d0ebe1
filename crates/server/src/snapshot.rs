//! Exported snapshots for `"consistent_snapshot": true`: every endpoint of one FlightInfo reads the
//! database as of one instant.
//!
//! Planning opens a REPEATABLE READ transaction on a connection taken out of the pool, exports its
//! snapshot (`pg_export_snapshot`) and keeps the transaction open; each scan then starts with
//! `SET TRANSACTION SNAPSHOT`. A snapshot is released when every planned relation was read to its end,
//! when its tickets expire, when no scan has used it for `snapshot_idle_seconds` (so a client that
//! plans and never reads cannot hold one, and vacuum, for the tickets' lifetime), or at shutdown. At most [`MAX_HELD`] are held at once: each pins a backend
//! and holds back vacuum.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::db::{Object, Pool};

use crate::catalog::QualifiedName;
use crate::error::{DbError, Error};

/// Snapshots held at once, server-wide.
pub const MAX_HELD: usize = 8;

struct Held {
    _client: tokio_postgres::Client,
    expires_at_ms: i64,
    pending: HashSet<QualifiedName>,
    /// Scans attached now; an attached snapshot is never idle.
    in_use: usize,
    /// When it was exported, or a scan last attached or detached.
    last_used_ms: i64,
}

/// The snapshots this server holds open.
pub struct Snapshots {
    pool: Pool,
    held: Mutex<HashMap<String, Held>>,
    idle_ms: i64,
}

/// A scan's use of a held snapshot; the snapshot counts as in use until this is dropped.
pub struct SnapshotUse {
    snapshots: std::sync::Arc<Snapshots>,
    id: String,
}

impl Drop for SnapshotUse {
    fn drop(&mut self) {
        let mut held = self.snapshots.held.lock().expect("snapshot registry lock");
        if let Some(h) = held.get_mut(&self.id) {
            h.in_use = h.in_use.saturating_sub(1);
            h.last_used_ms = crate::service::now_ms();
        }
    }
}

/// Whether `id` looks like what `pg_export_snapshot` returns; it is spliced into SQL.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

impl Snapshots {
    /// An empty registry drawing connections from `pool`; a snapshot no scan used for `idle` is
    /// released.
    pub fn new(pool: Pool, idle: std::time::Duration) -> Self {
        Snapshots {
            pool,
            held: Mutex::new(HashMap::new()),
            idle_ms: idle.as_millis() as i64,
        }
    }

    /// Exports a new snapshot, held until `expires_at_ms`. The relations it will read are given later
    /// with [`Snapshots::expect`], once planning (which must happen after the export) knows them.
    /// With `base`, the snapshot is that one (exported elsewhere, e.g. by a replication slot's
    /// creation), held here so it outlives the session that exported it.
    pub async fn export(&self, expires_at_ms: i64, base: Option<&str>) -> Result<String, Error> {
        if self.count() >= MAX_HELD {
            return Err(Error::Busy(format!(
                "{MAX_HELD} consistent snapshots are already held; retry when a read finishes"
            )));
        }
        // Taken out of the pool: it stays idle in a transaction for as long as the tickets live.
        let client = Object::take(self.pool.get().await?);
        let import = match base {
            Some(id) if is_valid_id(id) => format!("; SET TRANSACTION SNAPSHOT '{id}'"),
            Some(id) => {
                return Err(Error::InvalidRequest(format!(
                    "{id:?} is not a snapshot id"
                )))
            }
            None => String::new(),
        };
        client
            .batch_execute(&format!(
                "SET idle_in_transaction_session_timeout = 0; \
                 BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY{import}"
            ))
            .await
            .map_err(DbError::from)?;
        let id: String = client
            .query_one("SELECT pg_catalog.pg_export_snapshot()", &[])
            .await
            .map_err(DbError::from)?
            .get(0);
        let mut held = self.held.lock().expect("snapshot registry lock");
        if held.len() >= MAX_HELD {
            return Err(Error::Busy(format!(
                "{MAX_HELD} consistent snapshots are already held"
            )));
        }
        held.insert(
            id.clone(),
            Held {
                _client: client,
                expires_at_ms,
                pending: HashSet::new(),
                in_use: 0,
                last_used_ms: crate::service::now_ms(),
            },
        );
        Ok(id)
    }

    /// Records the relations a snapshot's endpoints read; with none, the snapshot is released.
    pub fn expect(&self, id: &str, relations: impl IntoIterator<Item = QualifiedName>) {
        let mut held = self.held.lock().expect("snapshot registry lock");
        if let Some(h) = held.get_mut(id) {
            h.pending.extend(relations);
            if h.pending.is_empty() {
                held.remove(id);
            }
        }
    }

    /// Attaches a scan to `id`, or `None` when it is no longer held (scans cannot attach to a
    /// released snapshot).
    pub fn attach(self: &std::sync::Arc<Self>, id: &str) -> Option<SnapshotUse> {
        let mut held = self.held.lock().expect("snapshot registry lock");
        let h = held.get_mut(id)?;
        h.in_use += 1;
        h.last_used_ms = crate::service::now_ms();
        Some(SnapshotUse {
            snapshots: self.clone(),
            id: id.to_string(),
        })
    }

    /// A scan of `relation` under `id` reached its end; the last one releases the snapshot.
    pub fn completed(&self, id: &str, relation: &QualifiedName) {
        let mut held = self.held.lock().expect("snapshot registry lock");
        if let Some(h) = held.get_mut(id) {
            h.pending.remove(relation);
            if h.pending.is_empty() {
                held.remove(id);
                tracing::debug!(snapshot = id, "all endpoints read; snapshot released");
            }
        }
    }

    /// Releases snapshots whose tickets expired, and those no scan used for the idle limit.
    pub fn sweep(&self, now_ms: i64) {
        let idle_ms = self.idle_ms;
        self.held
            .lock()
            .expect("snapshot registry lock")
            .retain(|id, h| {
                let idle = h.in_use == 0 && now_ms - h.last_used_ms > idle_ms;
                if idle {
                    tracing::info!(snapshot = %id, "consistent snapshot released: unused for snapshot_idle_seconds");
                }
                h.expires_at_ms > now_ms && !idle
            });
    }

    /// Snapshots held now.
    pub fn count(&self) -> usize {
        self.held.lock().expect("snapshot registry lock").len()
    }

    /// Releases every snapshot.
    pub fn clear(&self) {
        self.held.lock().expect("snapshot registry lock").clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_ids_are_checked_before_use_in_sql() {
        assert!(is_valid_id("00000003-0000001B-1"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("1'; DROP TABLE x; --"));
    }
}
