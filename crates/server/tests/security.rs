//! Row-level security on a hypertable: chunks carry no policies of their own, so a role subject to
//! the hypertable's policies must get exactly what it sees through the hypertable, with chunk
//! endpoints and resume tickets kept.

use arrow_flight::Ticket;
use futures::TryStreamExt;
use testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_level_security_on_a_hypertable_is_respected() {
    let db = pg(fixture_url()).await;
    let s = scratch_schema(&db, "t_rls").await;
    private_hypertable(&db, &s, 3).await;
    let role = format!("hf_rls_reader_{}", std::process::id());
    db.batch_execute(&format!(
        "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN;
         GRANT USAGE ON SCHEMA {s} TO {role}; GRANT SELECT ON {s}.m TO {role};
         ALTER TABLE {s}.m ENABLE ROW LEVEL SECURITY;
         CREATE POLICY small_devices ON {s}.m FOR SELECT TO {role} USING (device_id < 5);"
    ))
    .await
    .unwrap();
    // What the role sees through the hypertable, from SQL as that role.
    let url = format!("{}?user={role}", fixture_url());
    let as_role = pg(&url).await;
    let want = metrics_rows_sql(&as_role, &metrics_canonical_sql(&format!("{s}.m"))).await;
    let all: i64 = db
        .query_one(&format!("SELECT count(*) FROM {s}.m"), &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        !want.is_empty() && (want.len() as i64) < all / 5,
        "the policy filters rows"
    );

    let server = TestServer::start(config(&url)).await;
    let mut client = server.client().await;
    let info = client.get_flight_info(path(&s, "m")).await.unwrap();
    assert_eq!(info.endpoint.len(), 3, "chunk endpoints are kept");
    assert_same_rows(&metrics_rows(&read_all(&server, &info).await), &want);

    // Resume tickets still work: cut each chunk after its first batch and go on from its ticket.
    let mut resumed = Vec::new();
    for e in &info.endpoint {
        let first = read_batches(&mut client, e.ticket.clone().unwrap(), 1)
            .await
            .unwrap();
        resumed.extend(first.batches);
        if let Some(t) = first.resume.last().filter(|t| !t.is_empty()) {
            let rest = read_batches(&mut client, Ticket::new(t.clone()), usize::MAX)
                .await
                .unwrap();
            resumed.extend(rest.batches);
        }
    }
    assert_same_rows(&metrics_rows(&resumed), &want);

    // The table's owner (not subject to the policy) still reads every row, chunk by chunk.
    let owner = TestServer::start(config(fixture_url())).await;
    let info = owner
        .client()
        .await
        .get_flight_info(path(&s, "m"))
        .await
        .unwrap();
    assert_eq!(row_count(&read_all(&owner, &info).await) as i64, all);
    drop((server, owner, as_role));
    drop_schema(&db, &s).await;
    db.batch_execute(&format!("DROP ROLE {role}"))
        .await
        .unwrap();
}

/// Error messages quote client input only up to a bound: a 10,000-character table name is
/// NOT_FOUND with a short message, not a header too large for gRPC (RESOURCE_EXHAUSTED).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_names_get_short_errors() {
    let server = TestServer::start(config(fixture_url())).await;
    let mut client = server.client().await;
    let name = "x".repeat(10_000);
    let e = status(
        client
            .get_flight_info(path("public", &name))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code(), tonic::Code::NotFound, "{}", e.message().len());
    assert!(e.message().len() < 400, "{} bytes", e.message().len());
    let cmd = serde_json::json!({"table": "public.metrics", "columns": [name]});
    let e = status(
        client
            .get_flight_info(arrow_flight::FlightDescriptor::new_cmd(cmd.to_string()))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().len() < 400, "{} bytes", e.message().len());
}

/// A partitioned table granted on the parent only: every leaf reads through the parent, with
/// resume tickets, and the role never needs a grant on the leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_granted_on_the_parent_only_read_through_it() {
    let db = pg(fixture_url()).await;
    let s = scratch_schema(&db, "t_pgrant").await;
    let role = format!("hf_parent_reader_{}", std::process::id());
    db.batch_execute(&format!(
        "CREATE TABLE {s}.p (id int, v text) PARTITION BY RANGE (id);
         CREATE TABLE {s}.p1 PARTITION OF {s}.p FOR VALUES FROM (0) TO (1000);
         CREATE TABLE {s}.p2 PARTITION OF {s}.p FOR VALUES FROM (1000) TO (3000);
         INSERT INTO {s}.p SELECT g, 'v' || g FROM generate_series(0, 2999) g;
         DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN;
         GRANT USAGE ON SCHEMA {s} TO {role}; GRANT SELECT ON {s}.p TO {role};"
    ))
    .await
    .unwrap();
    let url = format!("{}?user={role}", fixture_url());
    let mut c = config(&url);
    c.batch_rows = 500;
    let server = TestServer::start(c).await;
    let mut client = server.client().await;
    let info = client.get_flight_info(path(&s, "p")).await.unwrap();
    assert_eq!(info.endpoint.len(), 2);
    let mut ids = Vec::new();
    for e in &info.endpoint {
        // Cut after the first batch and resume from its ticket.
        let first = read_batches(&mut client, e.ticket.clone().unwrap(), 1)
            .await
            .unwrap();
        let ticket = first.resume.last().unwrap().clone();
        assert!(!ticket.is_empty(), "partition batches carry resume tickets");
        let rest = read_batches(&mut client, Ticket::new(ticket), usize::MAX)
            .await
            .unwrap();
        for b in first.batches.iter().chain(&rest.batches) {
            use arrow::array::AsArray;
            ids.extend(
                b.column(0)
                    .as_primitive::<arrow::datatypes::Int32Type>()
                    .values()
                    .iter()
                    .copied(),
            );
        }
    }
    ids.sort_unstable();
    assert_eq!(ids, (0..3000).collect::<Vec<i32>>());
    drop(server);
    drop_schema(&db, &s).await;
    db.batch_execute(&format!("DROP ROLE {role}"))
        .await
        .unwrap();
}

/// `tables_include` / `tables_exclude` narrow what is exposed, on top of `schemas`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_patterns_narrow_what_is_exposed() {
    let settings = server::config::Settings {
        database_url: fixture_url().into(),
        metrics_listen: String::new(),
        tables_include: vec!["public.*".into()],
        tables_exclude: vec!["public.dev*".into()],
        ..Default::default()
    };
    let server = TestServer::start(settings.validate().unwrap()).await;
    let mut client = server.client().await;
    let listed: Vec<String> = client
        .list_flights(arrow_flight::Criteria::default().expression)
        .await
        .unwrap()
        .map_ok(|i| i.flight_descriptor.unwrap().path.join("."))
        .try_collect()
        .await
        .unwrap();
    assert!(listed.contains(&"public.metrics".to_string()), "{listed:?}");
    assert!(
        listed
            .iter()
            .all(|t| t.starts_with("public.") && t != "public.devices"),
        "{listed:?}"
    );
    let e = status(
        client
            .get_flight_info(path("public", "devices"))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code(), tonic::Code::NotFound);
}
