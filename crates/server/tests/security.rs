//! Row-level security on a hypertable: chunks carry no policies of their own, so a role subject to
//! the hypertable's policies must get exactly what it sees through the hypertable, with chunk
//! endpoints and resume tickets kept.

use arrow_flight::Ticket;
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
