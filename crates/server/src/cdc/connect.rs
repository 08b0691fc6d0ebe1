//! The replication connection's settings from the same [`pgconn::Target`] every other connection
//! uses. `pgwire-replication` opens its own socket and does its own TLS (rustls), so it takes the
//! host, credentials and certificate *files*; what it cannot do is refused with the reason rather
//! than connecting some other way than configured.

use pgconn::{Pem, RootCert, SslMode, Target};
use pgwire_replication::{ReplicationConfig, TlsConfig};
use tokio_postgres::config::Host;

use super::CdcError;

/// Settings for a replication session on `slot`, reading `publication`.
pub fn replication_config(
    target: &Target,
    slot: &str,
    publication: &str,
) -> Result<ReplicationConfig, CdcError> {
    let unsupported = |what: &str| {
        Err(CdcError::Unsupported(format!(
            "change streams cannot connect {what} yet (the replication client opens its own connection); \
             connect directly"
        )))
    };
    if target.tunnel.is_some() {
        return unsupported("through an SSH tunnel");
    }
    let pg = &target.pg;
    let password = pg
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    let mut config = match pg.get_hosts().first() {
        Some(Host::Unix(dir)) => ReplicationConfig::unix(
            dir.to_string_lossy(),
            port,
            target.role(),
            password,
            target.database(),
            slot,
            publication,
        ),
        // TCP, to the host given (its hostaddr when set) or libpq's default; TLS names the host.
        tcp => {
            let host = match tcp {
                Some(Host::Tcp(host)) => host.as_str(),
                _ => "localhost",
            };
            let address = match pg.get_hostaddrs().first() {
                Some(ip) if tcp.is_some() => ip.to_string(),
                _ => host.to_string(),
            };
            ReplicationConfig::new(
                address,
                target.role(),
                password,
                target.database(),
                slot,
                publication,
            )
            .with_port(port)
            .with_tls(tls(target, host)?)
        }
    };
    if let Some(options) = pg.get_options() {
        config = config.with_options(options);
    }
    // Binary values are what binary COPY carries: the same decoders read both.
    Ok(config
        .with_binary(true)
        .with_application_name("hyperflight-cdc"))
}

fn tls(target: &Target, host: &str) -> Result<TlsConfig, CdcError> {
    let file = |pem: &Pem, what: &str| match pem {
        Pem::File(path) => Ok(path.clone()),
        Pem::Inline(_) => Err(CdcError::Unsupported(format!(
            "change streams need {what} as a file, not inline PEM text"
        ))),
    };
    let roots = match &target.tls.root_cert {
        Some(RootCert::Pem(pem)) => Some(file(pem, "sslrootcert")?),
        // Without a file the client trusts the public web roots it ships, not the OS store.
        Some(RootCert::System) | None => None,
    };
    let mut config = match target.tls.mode {
        // `allow` tries plain first, as libpq does; the replication client has no second try.
        SslMode::Disable | SslMode::Allow => TlsConfig::disabled(),
        SslMode::Prefer => TlsConfig {
            mode: pgwire_replication::SslMode::Prefer,
            ..TlsConfig::disabled()
        },
        SslMode::Require if roots.is_none() => TlsConfig::require(),
        // libpq: `require` with a root certificate checks the chain, as verify-ca does.
        SslMode::Require | SslMode::VerifyCa => TlsConfig::verify_ca(roots),
        SslMode::VerifyFull => TlsConfig::verify_full(roots).with_sni_hostname(host),
    };
    if let Some((cert, key)) = &target.tls.client {
        config = config.with_client_cert(file(cert, "sslcert")?, file(key, "sslkey")?);
    }
    Ok(config)
}
