//! The compatibility subset against TimescaleDB 2.19.3 (Apache-2 edition), installed beside 2.28.3:
//! discovery, reads, resume and windows. A database of this test's own is created with
//! `timescaledb.license = 'apache'` and `CREATE EXTENSION timescaledb VERSION '2.19.3'`.

use std::process::{Command, Stdio};

use arrow_flight::{FlightDescriptor, Ticket};
use protocol::{EndpointKind, EndpointMetadata};
use testkit::*;

const ROWS: i64 = 60_000;
const DAYS: i64 = 3;

/// A 2.19.3 database with the sample data; dropped when the test ends.
struct CompatDb {
    name: String,
}

impl CompatDb {
    async fn create() -> CompatDb {
        let name = format!("hf_compat_{}", std::process::id());
        let admin = pg(cluster_url()).await;
        // One statement each: DROP and CREATE DATABASE refuse to run in a transaction block.
        for sql in [
            format!("DROP DATABASE IF EXISTS {name}"),
            format!("CREATE DATABASE {name}"),
            format!("ALTER DATABASE {name} SET timescaledb.license = 'apache'"),
        ] {
            admin.simple_query(&sql).await.unwrap();
        }
        // The license setting applies to new sessions of the database.
        let db = pg(&database_url(&name)).await;
        db.batch_execute("CREATE EXTENSION timescaledb VERSION '2.19.3'")
            .await
            .unwrap();
        let out = Command::new("bash")
            .arg(repo().join("scripts/load-sample-data.sh"))
            .args([
                "--database",
                &name,
                "--rows",
                &ROWS.to_string(),
                "--days",
                &DAYS.to_string(),
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        CompatDb { name }
    }

    fn url(&self) -> String {
        database_url(&self.name)
    }
}

impl Drop for CompatDb {
    fn drop(&mut self) {
        let _ = psql(cluster_url())
            .arg("-c")
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .stdin(Stdio::null())
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timescaledb_2_19_discovery_reads_resume_and_windows() {
    let compat = CompatDb::create().await;
    let url = compat.url();
    let db = pg(&url).await;
    let version: String = db
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, "2.19.3");
    let server = TestServer::start(config(&url)).await;
    let mut client = server.client().await;

    // Discovery: one chunk endpoint per day, exact rows.
    let info = client
        .get_flight_info(path("public", "metrics"))
        .await
        .unwrap();
    let meta: Vec<EndpointMetadata> = info
        .endpoint
        .iter()
        .map(|e| EndpointMetadata::from_json(&e.app_metadata).unwrap())
        .collect();
    assert_eq!(meta.len(), DAYS as usize);
    assert!(meta
        .iter()
        .all(|m| m.kind == EndpointKind::Chunk && !m.is_compressed));
    let sql = metrics_rows_sql(&db, &metrics_canonical_sql("public.metrics")).await;
    assert_eq!(sql.len() as i64, ROWS);
    assert_same_rows(&metrics_rows(&read_all(&server, &info).await), &sql);

    // Resume in the middle of the first chunk.
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let first = read_batches(&mut client, ticket.clone(), 2).await.unwrap();
    let rest = read_batches(
        &mut client,
        Ticket::new(first.resume.last().unwrap().clone()),
        usize::MAX,
    )
    .await
    .unwrap();
    let whole = read_batches(&mut client, ticket, usize::MAX).await.unwrap();
    let mut resumed = first.batches;
    resumed.extend(rest.batches);
    assert!(whole.batches.len() > 2, "the chunk spans several batches");
    assert_same_rows(&metrics_rows(&resumed), &metrics_rows(&whole.batches));

    // A window prunes chunks and filters the edges.
    let cmd = serde_json::json!({"table": "public.metrics",
        "start": "2026-10-01T12:00:00Z", "end": "2026-10-02T06:00:00Z"});
    let info = client
        .get_flight_info(FlightDescriptor::new_cmd(cmd.to_string()))
        .await
        .unwrap();
    assert_eq!(info.endpoint.len(), 2);
    let want = metrics_rows_sql(
        &db,
        &format!(
            "{} WHERE time >= '2026-10-01T12:00:00Z' AND time < '2026-10-02T06:00:00Z'",
            metrics_canonical_sql("public.metrics")
        ),
    )
    .await;
    assert_same_rows(&metrics_rows(&read_all(&server, &info).await), &want);
    drop(db);
}
