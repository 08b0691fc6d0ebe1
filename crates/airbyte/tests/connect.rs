//! The source's `ssl_mode` and `tunnel_method` against a real PostgreSQL with TLS on and a real
//! OpenSSH server: `check` succeeds with each, and each connection failure is CONNECTION_STATUS
//! FAILED with what to fix.

use std::process::{Command, Stdio};

use serde_json::{json, Value};
use testkit::secure::{Sshd, TlsCluster, PASSWORD};

const BIN: &str = env!("CARGO_BIN_EXE_hyperflight-airbyte");

/// Runs `check` with `config`; returns the CONNECTION_STATUS (status, message) and the LOG lines.
fn check(dir: &std::path::Path, config: &Value) -> (String, String, String) {
    let path = dir.join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "check exits 0: {out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|m| m["type"] == "CONNECTION_STATUS")
        .unwrap_or_else(|| panic!("no CONNECTION_STATUS in {stdout}"));
    let s = &status["connectionStatus"];
    (
        s["status"].as_str().unwrap().to_string(),
        s["message"].as_str().unwrap_or_default().to_string(),
        stdout,
    )
}

#[test]
fn check_over_tls_and_through_a_tunnel_and_each_failure() {
    let c = TlsCluster::start();
    let ca = std::fs::read_to_string(&c.certs.ca).unwrap();
    let other_ca = std::fs::read_to_string(&c.certs.other_ca).unwrap();
    let config = |host: &str, user: &str, ssl_mode: Value| {
        json!({
            "host": host, "port": c.port, "database": "postgres", "username": user,
            "password": PASSWORD, "ssl_mode": ssl_mode, "schemas": ["public"],
        })
    };
    let verify_full = json!({"mode": "verify-full", "ca_certificate": ca});
    let (status, message, _) = check(
        c.dir(),
        &config("localhost", "tls_user", verify_full.clone()),
    );
    assert_eq!(status, "SUCCEEDED", "{message}");
    let cert = json!({
        "mode": "verify-ca", "ca_certificate": ca,
        "client_certificate": std::fs::read_to_string(&c.certs.client_cert).unwrap(),
        "client_key": std::fs::read_to_string(&c.certs.client_key).unwrap(),
    });
    let (status, message, _) = check(c.dir(), &config("127.0.0.1", "cert_user", cert));
    assert_eq!(status, "SUCCEEDED", "client certificate: {message}");

    for (cfg, says) in [
        (
            config("127.0.0.1", "tls_user", json!({"mode": "disable"})),
            "no pg_hba.conf entry",
        ),
        (
            config(
                "localhost",
                "tls_user",
                json!({"mode": "verify-full", "ca_certificate": other_ca}),
            ),
            "certificate not trusted (unknown issuer)",
        ),
        (
            {
                let mut c = config("localhost", "tls_user", verify_full.clone());
                c["password"] = json!("wrong");
                c
            },
            "authentication failed for role \"tls_user\"",
        ),
        (
            {
                let mut c = config("localhost", "tls_user", verify_full.clone());
                c["database"] = json!("nope");
                c
            },
            "database \"nope\" does not exist",
        ),
    ] {
        let (status, message, stdout) = check(c.dir(), &cfg);
        assert_eq!(status, "FAILED", "{stdout}");
        assert!(message.contains(says), "{says:?} in {message:?}");
        assert!(
            !stdout.contains("wrong\""),
            "no password in the output: {stdout}"
        );
    }

    // Through an SSH tunnel with Airbyte's fields; the host key's fingerprint is logged.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sshd = rt.block_on(Sshd::start());
    let mut cfg = config("localhost", "tls_user", verify_full);
    cfg["tunnel_method"] = json!({
        "tunnel_method": "SSH_KEY_AUTH", "tunnel_host": "127.0.0.1", "tunnel_port": sshd.port,
        "tunnel_user": sshd.user, "ssh_key": sshd.user_key,
    });
    let (status, message, stdout) = check(c.dir(), &cfg);
    assert_eq!(status, "SUCCEEDED", "{message}\n{}", sshd.log());
    assert!(
        !stdout.contains("OPENSSH PRIVATE KEY"),
        "the key never shows: {stdout}"
    );
    cfg["tunnel_method"]["ssh_key"] = json!("not a key");
    let (status, message, _) = check(c.dir(), &cfg);
    assert_eq!(status, "FAILED");
    assert!(
        message.contains("SSH tunnel via") && message.contains("cannot read the private key"),
        "{message}"
    );
}
