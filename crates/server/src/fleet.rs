//! Scale-out: servers sharing a ticket secret form a fleet, so each endpoint can be read from any of
//! them. This module decides which locations FlightInfo lists for an endpoint, takes the WAL
//! position a plan is made at, and makes a server on a hot standby wait until its replay has passed
//! that position before it reads (else UNAVAILABLE, so the client takes the next location).

use std::time::{Duration, Instant};

use arrow_flight::Location;

use crate::config::FleetSettings;
use crate::db::Pool;
use crate::error::{DbError, Error};

/// Flight's URI for "the server this FlightInfo came from" (arrow-flight 15+).
pub const REUSE_CONNECTION: &str = "arrow-flight-reuse-connection://?";

/// How often a standby's replay position is polled while a DoGet waits for it.
const REPLAY_POLL: Duration = Duration::from_millis(25);

/// The fleet as this server knows it, from the settings.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    /// This server first, then the peers on the primary, then those on standbys.
    locations: Vec<String>,
    /// Bound on the wait for replay in [`Fleet::wait_replayed`].
    replay_wait: Duration,
}

impl Fleet {
    pub fn new(settings: &FleetSettings) -> Fleet {
        let this = settings
            .advertise_url
            .clone()
            .unwrap_or_else(|| REUSE_CONNECTION.to_string());
        let mut locations = vec![this];
        for url in settings.peers.iter().chain(&settings.replica_peers) {
            if !locations.contains(url) {
                locations.push(url.clone());
            }
        }
        Fleet {
            locations,
            replay_wait: settings.replay_wait,
        }
    }

    /// Whether other servers can read this server's tickets.
    pub fn has_peers(&self) -> bool {
        self.locations.len() > 1
    }

    /// The locations of endpoint `index`: every server of the fleet, the list rotated by `index`,
    /// so that the first choice of consecutive endpoints (a table's chunks) goes round the fleet and
    /// every later choice is a fallback. None without peers: the client reads from the server it
    /// asked. `pinned` (a consistent-snapshot plan, whose snapshot only this server holds) lists
    /// none either.
    pub fn locations(&self, index: usize, pinned: bool) -> Vec<Location> {
        if !self.has_peers() || pinned {
            return Vec::new();
        }
        let n = self.locations.len();
        (0..n)
            .map(|k| Location {
                uri: self.locations[(index + k) % n].clone(),
            })
            .collect()
    }

    /// The WAL position a plan made now is at: the primary's insert position, or, when this
    /// server's database is a standby itself, what it has replayed (everything the plan saw). The
    /// insert position, not the write position: with `synchronous_commit = off` a committed
    /// transaction's commit record may not be written yet. 0 without peers: no other server reads
    /// the tickets.
    pub async fn planning_lsn(&self, pool: &Pool) -> Result<u64, Error> {
        if !self.has_peers() {
            return Ok(0);
        }
        let client = pool.get().await.map_err(DbError::from)?;
        let row = client
            .query_one(
                "SELECT (CASE WHEN pg_catalog.pg_is_in_recovery() \
                   THEN pg_catalog.pg_last_wal_replay_lsn() \
                   ELSE pg_catalog.pg_current_wal_insert_lsn() END - '0/0'::pg_lsn)::int8",
                &[],
            )
            .await
            .map_err(DbError::from)?;
        Ok(row.get::<_, Option<i64>>(0).unwrap_or(0).max(0) as u64)
    }

    /// Returns once this server's database has the data of a plan made at `lsn`: at once on a
    /// primary; on a standby when its replay has reached `lsn`, polling for at most `replay_wait`,
    /// after which the answer is [`Error::ReplicaBehind`] (UNAVAILABLE: another location has it).
    pub async fn wait_replayed(&self, pool: &Pool, lsn: u64) -> Result<(), Error> {
        if lsn == 0 {
            return Ok(());
        }
        let started = Instant::now();
        let client = pool.get().await.map_err(DbError::from)?;
        let statement = client
            .prepare(
                "SELECT pg_catalog.pg_is_in_recovery(), \
                   (pg_catalog.pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::int8",
            )
            .await
            .map_err(DbError::from)?;
        loop {
            let row = client
                .query_one(&statement, &[])
                .await
                .map_err(DbError::from)?;
            if !row.get::<_, bool>(0) {
                return Ok(());
            }
            let replayed = row.get::<_, Option<i64>>(1).unwrap_or(0).max(0) as u64;
            if replayed >= lsn {
                return Ok(());
            }
            if started.elapsed() >= self.replay_wait {
                return Err(Error::ReplicaBehind {
                    replayed: format_lsn(replayed),
                    needed: format_lsn(lsn),
                    waited: self.replay_wait,
                });
            }
            tokio::time::sleep(REPLAY_POLL).await;
        }
    }
}

/// An LSN as PostgreSQL prints it (`16/B374D848`).
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(peers: &[&str], replicas: &[&str]) -> Fleet {
        Fleet::new(&FleetSettings {
            advertise_url: Some("grpc://a:1".into()),
            peers: peers.iter().map(|s| s.to_string()).collect(),
            replica_peers: replicas.iter().map(|s| s.to_string()).collect(),
            replay_wait: Duration::ZERO,
        })
    }

    fn uris(l: Vec<Location>) -> Vec<String> {
        l.into_iter().map(|l| l.uri).collect()
    }

    #[test]
    fn a_lone_server_lists_no_locations() {
        let f = Fleet::new(&FleetSettings::default());
        assert!(!f.has_peers());
        assert!(f.locations(3, false).is_empty());
    }

    #[test]
    fn locations_rotate_so_first_choices_are_balanced() {
        let f = fleet(&["grpc://b:1"], &["grpc://c:1"]);
        assert_eq!(
            uris(f.locations(0, false)),
            ["grpc://a:1", "grpc://b:1", "grpc://c:1"]
        );
        assert_eq!(
            uris(f.locations(1, false)),
            ["grpc://b:1", "grpc://c:1", "grpc://a:1"]
        );
        assert_eq!(
            uris(f.locations(5, false)),
            ["grpc://c:1", "grpc://a:1", "grpc://b:1"]
        );
        let mut first = [0; 3];
        for i in 0..9 {
            let l = uris(f.locations(i, false));
            first[["grpc://a:1", "grpc://b:1", "grpc://c:1"]
                .iter()
                .position(|u| *u == l[0])
                .unwrap()] += 1;
        }
        assert_eq!(first, [3, 3, 3]);
        assert!(f.locations(0, true).is_empty());
    }

    #[test]
    fn duplicates_are_listed_once_and_self_defaults_to_reuse() {
        let f = Fleet::new(&FleetSettings {
            advertise_url: None,
            peers: vec!["grpc://b:1".into(), "grpc://b:1".into()],
            replica_peers: vec![],
            replay_wait: Duration::ZERO,
        });
        assert_eq!(
            uris(f.locations(0, false)),
            [REUSE_CONNECTION, "grpc://b:1"]
        );
    }

    #[test]
    fn lsns_print_like_postgres() {
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(format_lsn(0), "0/0");
    }
}
