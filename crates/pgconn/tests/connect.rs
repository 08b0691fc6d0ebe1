//! Every sslmode, client certificates, `.pgpass`, SSH tunnels and each connection error category,
//! against a real PostgreSQL with TLS on and a real OpenSSH server (testkit::secure).

use std::collections::BTreeMap;
use std::time::Duration;

use pgconn::{
    ConnectError, Connector, HostKeys, Params, SshFailure, Target, TlsFailure, TunnelAuth,
    TunnelSettings,
};
use testkit::secure::{Sshd, TlsCluster, PASSWORD, SSH_PASSWORD_USER};

/// What [`ssl_in_use`] says.
const TLS: bool = true;
const PLAIN: bool = false;

fn no_env() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([("HOME", "/nonexistent")])
}

fn target(conninfo: &str) -> Target {
    Target::resolve(conninfo, &Params::default(), None, &no_env()).unwrap()
}

/// Connects and says whether the session uses TLS (as the server sees it).
async fn ssl_in_use(t: Target) -> Result<bool, ConnectError> {
    let client = Connector::new(t)?.connect().await?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_catalog.pg_stat_ssl WHERE pid = pg_catalog.pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    Ok(row.get(0))
}

async fn try_with(conninfo: &str) -> Result<bool, ConnectError> {
    ssl_in_use(target(conninfo)).await
}

#[tokio::test]
async fn every_sslmode_with_libpq_semantics() {
    let c = TlsCluster::start();
    let (ca, other) = (c.certs.ca.display(), c.certs.other_ca.display());
    let at = |user: &str, extra: &str| {
        let host = if extra.contains("host=") {
            ""
        } else {
            "host=127.0.0.1"
        };
        format!(
            "{host} port={} dbname=postgres user={user} password={PASSWORD} {extra}",
            c.port
        )
    };
    // disable: plain only, so a TLS-only role is refused by pg_hba.conf.
    assert_eq!(
        try_with(&at("plain_user", "sslmode=disable"))
            .await
            .unwrap(),
        PLAIN
    );
    match try_with(&at("tls_user", "sslmode=disable")).await {
        Err(ConnectError::Rejected(m)) => assert!(m.contains("no encryption"), "{m}"),
        other => panic!("{other:?}"),
    }
    // allow: plain first, TLS when refused; prefer: TLS first, plain when refused.
    assert_eq!(
        try_with(&at("plain_user", "sslmode=allow")).await.unwrap(),
        PLAIN
    );
    assert_eq!(
        try_with(&at("tls_user", "sslmode=allow")).await.unwrap(),
        TLS
    );
    assert_eq!(
        try_with(&at("tls_user", "sslmode=prefer")).await.unwrap(),
        TLS
    );
    assert_eq!(
        try_with(&at("plain_user", "sslmode=prefer")).await.unwrap(),
        PLAIN
    );
    assert_eq!(
        try_with(&at("pass_user", "")).await.unwrap(),
        TLS,
        "prefer is the default"
    );
    // require: encrypted, certificate not checked (the name here matches nothing)...
    let wrong_name = "host=wrong.invalid hostaddr=127.0.0.1";
    let require = format!("sslmode=require {wrong_name}");
    assert_eq!(try_with(&at("tls_user", &require)).await.unwrap(), TLS);
    // ...unless roots are given: then it checks the chain, as libpq does.
    let untrusted = try_with(&at(
        "tls_user",
        &format!("sslmode=require sslrootcert={other}"),
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(&untrusted, ConnectError::Tls { reason: TlsFailure::Untrusted(r), .. } if r == "unknown issuer"),
        "{untrusted:?}"
    );
    assert!(
        untrusted.to_string().contains("certificate not trusted"),
        "{untrusted}"
    );
    // verify-ca: the chain, not the name.
    let verify_ca = format!("sslmode=verify-ca sslrootcert={ca} {wrong_name}");
    assert_eq!(try_with(&at("tls_user", &verify_ca)).await.unwrap(), TLS);
    let e = try_with(&at(
        "tls_user",
        &format!("sslmode=verify-ca sslrootcert={other}"),
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(
            e,
            ConnectError::Tls {
                reason: TlsFailure::Untrusted(_),
                ..
            }
        ),
        "{e:?}"
    );
    // verify-full: the chain and the name (DNS name and IP address SANs).
    for host in ["localhost", "127.0.0.1"] {
        let full = format!("sslmode=verify-full sslrootcert={ca} host={host}");
        assert_eq!(
            try_with(&at("tls_user", &full)).await.unwrap(),
            TLS,
            "{host}"
        );
    }
    let e = try_with(&at(
        "tls_user",
        &format!("sslmode=verify-full sslrootcert={ca} {wrong_name}"),
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(&e, ConnectError::Tls { host, reason: TlsFailure::HostnameMismatch(n) } if host == "wrong.invalid" && n == "wrong.invalid"),
        "{e:?}"
    );
    assert!(e.to_string().contains("hostname mismatch"), "{e}");
}

#[tokio::test]
async fn client_certificates_passwords_and_databases() {
    let c = TlsCluster::start();
    let base = format!(
        "host=localhost port={} dbname=postgres sslmode=verify-full sslrootcert={}",
        c.port,
        c.certs.ca.display()
    );
    let cert = format!(
        "{base} user=cert_user sslcert={} sslkey={}",
        c.certs.client_cert.display(),
        c.certs.client_key.display()
    );
    assert_eq!(try_with(&cert).await.unwrap(), TLS, "cert authentication");
    let e = try_with(&format!("{base} user=cert_user"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ConnectError::Authentication { role, .. } if role == "cert_user"),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .starts_with("authentication failed for role \"cert_user\""),
        "{e}"
    );
    // A missing key file is a settings error before any connection.
    let e = try_with(&format!(
        "{base} user=cert_user sslcert={} sslkey=/nonexistent.key",
        c.certs.client_cert.display()
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(&e, ConnectError::Config(m) if m.contains("sslkey /nonexistent.key")),
        "{e:?}"
    );

    let e = try_with(&format!("{base} user=pass_user password=wrong"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ConnectError::Authentication { role, .. } if role == "pass_user"),
        "{e:?}"
    );
    assert!(
        !format!("{e} {e:?}").contains("wrong"),
        "no password in messages: {e:?}"
    );
    let e = try_with(&format!("{base} user=pass_user"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ConnectError::PasswordMissing { role } if role == "pass_user"),
        "{e:?}"
    );
    let e = try_with(&format!(
        "{base} user=pass_user password={PASSWORD} dbname=nope"
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(&e, ConnectError::NoDatabase(d) if d == "nope"),
        "{e:?}"
    );
    assert_eq!(e.to_string(), "database \"nope\" does not exist");

    // .pgpass, found through `passfile` (libpq's name) and through PGPASSFILE.
    let passfile = c.dir().join("pgpass");
    std::fs::write(
        &passfile,
        format!("localhost:{}:*:pass_user:{PASSWORD}\n", c.port),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    let conninfo = format!("{base} user=pass_user passfile={}", passfile.display());
    assert_eq!(try_with(&conninfo).await.unwrap(), TLS);
    let path = passfile.display().to_string();
    let env = BTreeMap::from([("HOME", "/nonexistent"), ("PGPASSFILE", path.as_str())]);
    let t = Target::resolve(
        &format!("{base} user=pass_user"),
        &Params::default(),
        None,
        &env,
    )
    .unwrap();
    assert_eq!(ssl_in_use(t).await.unwrap(), TLS);
}

#[tokio::test]
async fn a_server_without_tls_and_a_closed_port() {
    // The project's cluster runs without TLS.
    let url = testkit::cluster_url();
    let e = try_with(&format!("{url}?sslmode=require"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ConnectError::Tls {
                reason: TlsFailure::NotSupported,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("the server does not support TLS"),
        "{e}"
    );
    assert_eq!(
        try_with(&format!("{url}?sslmode=prefer")).await.unwrap(),
        PLAIN
    );
    let port = testkit::free_port();
    let e = try_with(&format!(
        "host=127.0.0.1 port={port} user=x connect_timeout=5"
    ))
    .await
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("connection refused at 127.0.0.1:{port}")
    );
    assert!(e.is_transient());
}

#[tokio::test]
async fn ssh_tunnels_with_key_and_password_and_host_key_checks() {
    let c = TlsCluster::start();
    let sshd = Sshd::start().await;
    let db = format!(
        "host=localhost port={} dbname=postgres user=tls_user password={PASSWORD} sslmode=verify-full sslrootcert={}",
        c.port,
        c.certs.ca.display()
    );
    let tunnel = |auth: TunnelAuth, host_keys: HostKeys, user: &str| {
        let mut t = target(&db);
        t.tunnel = Some(TunnelSettings {
            host: "127.0.0.1".into(),
            port: sshd.port,
            user: user.into(),
            auth,
            host_keys,
        });
        t
    };
    let known = HostKeys::File(sshd.known_hosts.clone());
    let key = TunnelAuth::Key(sshd.user_key.clone());
    // Key auth, TLS to the database through the tunnel, verified against the database's name.
    let t = tunnel(key.clone(), known.clone(), &sshd.user);
    let connector = Connector::new(t).unwrap();
    let client = connector
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
    let n: i64 = client
        .query_one("SELECT count(*) FROM public.readings", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1000);
    // A cancel goes the same way.
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(60)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    connector.cancel(&token).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(20), sleeper)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(
        e.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED)
    );

    // Password auth (needs an OS user with a password: root creates one).
    let password = sshd
        .password
        .clone()
        .expect("the SSH password test runs as root (CI does)");
    let t = tunnel(
        TunnelAuth::Password(password),
        known.clone(),
        SSH_PASSWORD_USER,
    );
    assert_eq!(
        ssl_in_use(t)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log())),
        TLS
    );
    let t = tunnel(
        TunnelAuth::Password("nope".into()),
        known.clone(),
        SSH_PASSWORD_USER,
    );
    let e = ssl_in_use(t).await.unwrap_err();
    assert!(
        matches!(&e, ConnectError::Ssh { reason: SshFailure::Authentication(u), .. } if u == SSH_PASSWORD_USER),
        "{e:?}"
    );

    // A changed host key is refused; so is an unknown one.
    let t = tunnel(
        key.clone(),
        HostKeys::File(sshd.wrong_known_hosts.clone()),
        &sshd.user,
    );
    let e = ssl_in_use(t).await.unwrap_err();
    assert!(
        matches!(
            &e,
            ConnectError::Ssh {
                reason: SshFailure::HostKeyChanged { line: 1, .. },
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("host key changed"), "{e}");
    let t = tunnel(
        key.clone(),
        HostKeys::File(c.dir().join("empty_known_hosts")),
        &sshd.user,
    );
    let e = ssl_in_use(t).await.unwrap_err();
    assert!(
        matches!(&e, ConnectError::Ssh { reason: SshFailure::HostKeyUnknown { fingerprint, .. }, .. } if fingerprint.starts_with("SHA256:")),
        "{e:?}"
    );
    assert!(!e.is_transient());
    // Nothing listens at the SSH port.
    let mut t = tunnel(key, known, &sshd.user);
    t.tunnel.as_mut().unwrap().port = testkit::free_port();
    let e = ssl_in_use(t).await.unwrap_err();
    assert!(
        matches!(
            &e,
            ConnectError::Ssh {
                reason: SshFailure::Connect(_),
                ..
            }
        ),
        "{e:?}"
    );
}
