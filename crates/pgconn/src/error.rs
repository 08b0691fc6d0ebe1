//! Why a connection failed, in the terms of what to fix. Classified once from tokio-postgres,
//! rustls and russh errors; the messages name roles, databases, hosts and files, never a password.

use std::error::Error as StdError;
use std::io;

/// A connection that could not be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    /// The connection settings themselves are wrong (unreadable certificate file, bad sslmode, …).
    #[error("{0}")]
    Config(String),
    /// The server rejected the role's credentials.
    #[error("authentication failed for role {role:?}{hint}")]
    Authentication {
        /// The role connecting.
        role: String,
        /// What to check, for the authentication method that failed.
        hint: String,
    },
    /// The server asked for a password and none was configured.
    #[error("the server asks for a password for role {role:?} and none is set (give one in the URL, a password file setting, PGPASSWORD or a .pgpass entry)")]
    PasswordMissing {
        /// The role connecting.
        role: String,
    },
    /// No `pg_hba.conf` line lets this connection in (often: TLS required, or only without TLS).
    #[error("the server refused the connection: {0}")]
    Rejected(String),
    /// The database does not exist.
    #[error("database {0:?} does not exist")]
    NoDatabase(String),
    /// The TLS handshake failed; the variant says why.
    #[error("TLS handshake with {host} failed: {reason}")]
    Tls {
        /// The host the handshake was with.
        host: String,
        /// Why.
        reason: TlsFailure,
    },
    /// Nothing listens at the address.
    #[error("connection refused at {0}")]
    Refused(String),
    /// No answer within the connect timeout.
    #[error("connection to {0} timed out")]
    Timeout(String),
    /// The host cannot be reached (name resolution, routing, a socket path that does not exist).
    #[error("cannot reach {addr}: {detail}")]
    Unreachable {
        /// host:port or socket path.
        addr: String,
        /// The operating system's reason.
        detail: String,
    },
    /// The SSH tunnel could not be opened; the variant says why.
    #[error("SSH tunnel via {server}: {reason}")]
    Ssh {
        /// `user@host:port` of the SSH server.
        server: String,
        /// Why.
        reason: SshFailure,
    },
    /// The server is up but cannot take this connection now (starting up, shutting down, out of
    /// connection slots).
    #[error("the database cannot accept connections now: {0}")]
    Busy(String),
    /// Anything else the server said or the connection met.
    #[error("{0}")]
    Other(String),
}

/// Why a TLS handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsFailure {
    /// The certificate chain does not lead to a trusted root.
    #[error("certificate not trusted ({0}); set sslrootcert to the CA that signed the server's certificate")]
    Untrusted(String),
    /// The certificate is valid but not for the host name connected to.
    #[error("hostname mismatch: the server's certificate is not valid for {0:?} (sslmode=verify-full checks it; verify-ca does not)")]
    HostnameMismatch(String),
    /// The server answered the TLS request with "no".
    #[error("the server does not support TLS (ssl = off); use sslmode=prefer or disable, or turn TLS on in the server")]
    NotSupported,
    /// The server refused the client certificate, or wanted one and got none.
    #[error("the server refused the client certificate ({0}); check sslcert and sslkey")]
    ClientCertificate(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// Why an SSH tunnel failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SshFailure {
    /// TCP to the SSH server failed.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The server's host key differs from the one recorded: possibly a man in the middle.
    #[error("host key changed (recorded at line {line} of {file}): refusing to connect; if the key was rotated on purpose, replace that line")]
    HostKeyChanged {
        /// The known-hosts file.
        file: String,
        /// Its line with the old key.
        line: usize,
    },
    /// The host has no recorded key.
    #[error("host key {fingerprint} is not in {file}: refusing to connect; add the host's key there (e.g. `ssh-keyscan -p PORT HOST >> {file}`) after checking the fingerprint")]
    HostKeyUnknown {
        /// The offered key's SHA-256 fingerprint.
        fingerprint: String,
        /// The known-hosts file.
        file: String,
    },
    /// The private key could not be read.
    #[error("cannot read the private key: {0}")]
    Key(String),
    /// The server refused the key or password.
    #[error("authentication failed for user {0:?}")]
    Authentication(String),
    /// The SSH server would not forward to the database.
    #[error("cannot forward to {addr}: {detail}")]
    Forward {
        /// The database's host:port as seen from the SSH server.
        addr: String,
        /// The SSH server's reason.
        detail: String,
    },
    /// The SSH protocol failed.
    #[error("{0}")]
    Protocol(String),
}

impl ConnectError {
    /// Whether waiting may fix it (the database or the network is down) rather than the settings
    /// being wrong. Servers answer UNAVAILABLE for these and FAILED_PRECONDITION for the others.
    pub fn is_transient(&self) -> bool {
        match self {
            ConnectError::Refused(_)
            | ConnectError::Timeout(_)
            | ConnectError::Unreachable { .. }
            | ConnectError::Busy(_)
            | ConnectError::Other(_) => true,
            ConnectError::Ssh { reason, .. } => {
                matches!(
                    reason,
                    SshFailure::Connect(_) | SshFailure::Forward { .. } | SshFailure::Protocol(_)
                )
            }
            _ => false,
        }
    }
}

/// What a failed attempt knew: where it went and as whom.
pub(crate) struct Attempt<'a> {
    pub addr: &'a str,
    pub host: &'a str,
    pub role: &'a str,
    pub database: &'a str,
    pub client_certificate: bool,
}

/// Classifies a tokio-postgres connect error.
pub(crate) fn classify(e: &tokio_postgres::Error, at: &Attempt<'_>) -> ConnectError {
    use tokio_postgres::error::SqlState;
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        return if *code == SqlState::INVALID_PASSWORD {
            ConnectError::Authentication {
                role: at.role.to_string(),
                hint: " (check the password)".into(),
            }
        } else if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
            if db.message().starts_with("no pg_hba.conf entry") {
                ConnectError::Rejected(db.message().to_string())
            } else {
                let hint = if at.client_certificate {
                    " (the client certificate's common name must be the role, or mapped to it)"
                } else {
                    ""
                };
                ConnectError::Authentication {
                    role: at.role.to_string(),
                    hint: format!(": {}{hint}", db.message()),
                }
            }
        } else if *code == SqlState::INVALID_CATALOG_NAME {
            ConnectError::NoDatabase(at.database.to_string())
        } else if code.code().starts_with("53") || code.code().starts_with("57P0") {
            ConnectError::Busy(db.message().to_string())
        } else {
            ConnectError::Other(format!("{} ({})", db.message(), code.code()))
        };
    }
    if let Some(tls) = find::<rustls::Error>(e) {
        return ConnectError::Tls {
            host: at.host.to_string(),
            reason: tls_failure(tls, at.host),
        };
    }
    let text = chain(e);
    if text.contains("server does not support TLS") {
        return ConnectError::Tls {
            host: at.host.to_string(),
            reason: TlsFailure::NotSupported,
        };
    }
    if text.contains("password missing") {
        return ConnectError::PasswordMissing {
            role: at.role.to_string(),
        };
    }
    if let Some(io) = find::<io::Error>(e) {
        return io_failure(io, at.addr);
    }
    ConnectError::Other(text)
}

/// An I/O failure reaching `addr`.
pub(crate) fn io_failure(e: &io::Error, addr: &str) -> ConnectError {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => ConnectError::Refused(addr.to_string()),
        io::ErrorKind::TimedOut => ConnectError::Timeout(addr.to_string()),
        _ => ConnectError::Unreachable {
            addr: addr.to_string(),
            detail: e.to_string(),
        },
    }
}

fn tls_failure(e: &rustls::Error, host: &str) -> TlsFailure {
    use rustls::{AlertDescription as A, CertificateError as C};
    match e {
        rustls::Error::InvalidCertificate(
            C::NotValidForName | C::NotValidForNameContext { .. },
        ) => TlsFailure::HostnameMismatch(host.to_string()),
        rustls::Error::InvalidCertificate(c) => TlsFailure::Untrusted(match c {
            C::UnknownIssuer => "unknown issuer".into(),
            C::Expired | C::ExpiredContext { .. } => "expired".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => "not valid yet".into(),
            C::BadSignature => "bad signature".into(),
            C::Revoked => "revoked".into(),
            other => format!("{other:?}"),
        }),
        rustls::Error::AlertReceived(
            a @ (A::CertificateRequired
            | A::BadCertificate
            | A::UnknownCA
            | A::CertificateUnknown
            | A::AccessDenied
            | A::DecryptError),
        ) => TlsFailure::ClientCertificate(format!("alert {a:?}")),
        other => TlsFailure::Other(other.to_string()),
    }
}

/// `e` and its sources, as one line (tokio-postgres puts the reason in the source).
fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(err) = next {
        text.push_str(": ");
        text.push_str(&err.to_string());
        next = err.source();
    }
    text
}

/// The first error of type `T` in `e`'s source chain.
pub(crate) fn find<'a, T: StdError + 'static>(e: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut next: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        // An io::Error's `source` skips the error it wraps (tokio-rustls wraps rustls' that way).
        next = match err.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => err.source(),
        };
    }
    None
}
