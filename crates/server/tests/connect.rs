//! Reaching the database like a PostgreSQL client: TLS with verified certificates, an SSH tunnel,
//! and connection failures that say what to fix, on every call, in `health`, at start-up and in
//! `check-config --connect`. Against a real PostgreSQL with TLS on and a real OpenSSH server.

use std::process::{Command, Stdio};
use std::time::Duration;

use arrow_flight::Action;
use futures::TryStreamExt;
use server::config::Settings;
use testkit::secure::{Sshd, TlsCluster, PASSWORD};
use testkit::*;
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_hyperflight");

fn url(c: &TlsCluster, host: &str, extra: &str) -> String {
    format!(
        "postgres://tls_user:{PASSWORD}@{host}:{}/postgres?sslmode=verify-full&sslrootcert={}{extra}",
        c.port,
        c.certs.ca.display()
    )
}

async fn rows(server: &TestServer) -> usize {
    let mut client = server.client().await;
    let info = client
        .get_flight_info(path("public", "readings"))
        .await
        .unwrap();
    row_count(&read_all(server, &info).await)
}

/// The status `health` answers with.
async fn health(server: &TestServer) -> tonic::Status {
    let mut client = server.client().await;
    match client.do_action(Action::new("health", "")).await {
        Ok(stream) => match stream.try_collect::<Vec<_>>().await {
            Ok(_) => tonic::Status::ok(""),
            Err(e) => status(e),
        },
        Err(e) => status(e),
    }
}

#[tokio::test]
async fn reads_over_verified_tls_and_names_each_connection_failure() {
    let c = TlsCluster::start();
    let ok = TestServer::start(config(&url(&c, "localhost", ""))).await;
    assert_eq!(rows(&ok).await, 1000);
    assert_eq!(health(&ok).await.code(), Code::Ok);
    // The scans really ran over TLS.
    let tls_sessions = c.psql(
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = 'hyperflight' AND s.ssl",
    );
    assert!(
        tls_sessions.trim().parse::<i64>().unwrap() >= 1,
        "{tls_sessions}"
    );

    for (conninfo, code, says) in [
        (
            url(&c, "localhost", "").replace(PASSWORD, "wrong"),
            Code::FailedPrecondition,
            "cannot connect to the database: authentication failed for role \"tls_user\""
                .to_string(),
        ),
        (
            url(&c, "localhost", "").replace("/postgres?", "/nope?"),
            Code::FailedPrecondition,
            "database \"nope\" does not exist".into(),
        ),
        (
            url(&c, "wrong.invalid", "&hostaddr=127.0.0.1"),
            Code::FailedPrecondition,
            "TLS handshake with wrong.invalid failed: hostname mismatch".into(),
        ),
        (
            url(&c, "localhost", "").replace(
                &c.certs.ca.display().to_string(),
                &c.certs.other_ca.display().to_string(),
            ),
            Code::FailedPrecondition,
            "certificate not trusted (unknown issuer)".into(),
        ),
        (
            format!("{}?sslmode=require", cluster_url()),
            Code::FailedPrecondition,
            "the server does not support TLS".into(),
        ),
        {
            let port = free_port();
            (
                format!("postgres://x@127.0.0.1:{port}/db"),
                Code::Unavailable,
                format!("connection refused at 127.0.0.1:{port}"),
            )
        },
    ] {
        let server = TestServer::start(config(&conninfo)).await;
        let s = health(&server).await;
        assert_eq!(
            (s.code(), s.message().contains(&says)),
            (code, true),
            "{conninfo}: {s:?}"
        );
        assert!(
            !s.message().contains("wrong") || !conninfo.contains("wrong:"),
            "no password: {s:?}"
        );
        let mut client = server.client().await;
        let e = client
            .get_flight_info(path("public", "readings"))
            .await
            .unwrap_err();
        let e = status(e);
        assert_eq!(e.code(), code, "{conninfo}: {e:?}");
        assert!(e.message().contains(&says), "{conninfo}: {e:?}");
    }
}

#[tokio::test]
async fn reads_through_an_ssh_tunnel_and_refuses_a_changed_host_key() {
    let c = TlsCluster::start();
    let sshd = Sshd::start().await;
    let settings = |known_hosts: &std::path::Path| Settings {
        database_url: url(&c, "localhost", "").into(),
        metrics_listen: String::new(),
        tunnel_method: "SSH_KEY_AUTH".into(),
        tunnel_host: Some("127.0.0.1".into()),
        tunnel_port: sshd.port,
        tunnel_user: Some(sshd.user.clone()),
        ssh_key: Some(sshd.user_key.clone().into()),
        tunnel_known_hosts_file: Some(known_hosts.to_path_buf()),
        ..Settings::default()
    };
    let server = TestServer::start(settings(&sshd.known_hosts).validate().unwrap()).await;
    assert_eq!(rows(&server).await, 1000, "{}", sshd.log());
    let changed = TestServer::start(settings(&sshd.wrong_known_hosts).validate().unwrap()).await;
    let s = health(&changed).await;
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
    assert!(s.message().contains("host key changed"), "{s:?}");
}

fn hyperflight(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in
        std::env::vars().filter(|(k, _)| k.starts_with("HYPERFLIGHT_") || k.starts_with("PG"))
    {
        cmd.env_remove(k);
    }
    cmd.args(args).stdin(Stdio::null());
    cmd
}

#[tokio::test]
async fn check_config_connect_and_startup_say_what_is_wrong() {
    let c = TlsCluster::start();
    let good = url(&c, "localhost", "");
    let out = hyperflight(&["check-config", "--connect", "--database-url", &good])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("connected to PostgreSQL 15") && err.contains("as \"tls_user\", with TLS"),
        "{err}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("sslmode='verify-full'") && !stdout.contains(PASSWORD),
        "{stdout}"
    );

    let bad = good.replace("/postgres?", "/nope?");
    let out = hyperflight(&["check-config", "--connect", "--database-url", &bad])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot connect to the database: database \"nope\" does not exist"),
        "{err}"
    );
    // Without --connect the settings alone are checked.
    let out = hyperflight(&["check-config", "--database-url", &bad])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));

    // A password from a .pgpass file (PGPASSFILE), and a server that says at once what is wrong.
    let passfile = c.dir().join("pgpass");
    std::fs::write(
        &passfile,
        format!("localhost:{}:*:tls_user:wrong-one\n", c.port),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    let no_password = good.replace(&format!(":{PASSWORD}@"), "@");
    let log = c.dir().join("serve.log");
    let mut serve = hyperflight(&[
        "serve",
        "--database-url",
        &no_password,
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--metrics-listen",
        "",
    ])
    .env("PGPASSFILE", &passfile)
    .stderr(std::fs::File::create(&log).unwrap())
    .spawn()
    .unwrap();
    let says = "cannot connect to the database: authentication failed for role \"tls_user\"";
    wait_until(
        Duration::from_secs(20),
        "the start-up probe's message",
        || {
            let log = log.clone();
            async move {
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains(says)
            }
        },
    )
    .await;
    serve.kill().unwrap();
    serve.wait().unwrap();
    std::fs::write(
        &passfile,
        format!("localhost:{}:*:tls_user:{PASSWORD}\n", c.port),
    )
    .unwrap();
    let out = hyperflight(&["check-config", "--connect", "--database-url", &no_password])
        .env("PGPASSFILE", &passfile)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
