//! SSH tunnels (Airbyte's `tunnel_method`): one SSH session per tunnel, opened on first use and
//! again after it drops, and one `direct-tcpip` channel per PostgreSQL connection. russh does SSH.
//!
//! The server's host key is checked against a known-hosts file: a changed key is always refused;
//! an unknown one is refused too, unless the settings say to accept any key (Airbyte's own
//! behaviour, which then logs the key's fingerprint).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use russh::client::{self, Handle, Msg};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::ChannelStream;
use tokio::sync::Mutex;

use crate::error::SshFailure;
use crate::ConnectError;

/// How the SSH user proves who it is.
#[derive(Clone)]
pub enum TunnelAuth {
    /// A private key (OpenSSH or PEM text, unencrypted).
    Key(String),
    /// A password.
    Password(String),
}

/// Which host keys are trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeys {
    /// Keys recorded in this known-hosts file (OpenSSH format).
    File(PathBuf),
    /// Any key; its fingerprint is logged at WARN.
    AcceptAny,
}

/// Where the SSH server is and how to log in.
#[derive(Clone)]
pub struct TunnelSettings {
    /// SSH server host.
    pub host: String,
    /// SSH server port.
    pub port: u16,
    /// SSH user.
    pub user: String,
    /// Key or password.
    pub auth: TunnelAuth,
    /// Host key policy.
    pub host_keys: HostKeys,
}

impl std::fmt::Debug for TunnelSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let method = match self.auth {
            TunnelAuth::Key(_) => "key",
            TunnelAuth::Password(_) => "password",
        };
        write!(f, "{} ({method} auth, {:?})", self.server(), self.host_keys)
    }
}

impl TunnelSettings {
    /// `user@host:port`, for messages.
    pub fn server(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }

    fn fail(&self, reason: SshFailure) -> ConnectError {
        ConnectError::Ssh {
            server: self.server(),
            reason,
        }
    }
}

/// An SSH tunnel: a session shared by the connections that go through it.
pub(crate) struct Tunnel {
    settings: TunnelSettings,
    session: Mutex<Option<Handle<HostKeyCheck>>>,
}

impl Tunnel {
    pub(crate) fn new(settings: TunnelSettings) -> Tunnel {
        Tunnel {
            settings,
            session: Mutex::new(None),
        }
    }

    /// A byte stream to `host:port` as seen from the SSH server.
    pub(crate) async fn open(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<ChannelStream<Msg>, ConnectError> {
        let mut session = self.session.lock().await;
        if session.as_ref().is_none_or(|s| s.is_closed()) {
            let fresh = tokio::time::timeout(timeout, self.login())
                .await
                .map_err(|_| {
                    self.settings
                        .fail(SshFailure::Connect(format!("no answer within {timeout:?}")))
                })??;
            *session = Some(fresh);
        }
        let handle = session.as_ref().expect("just opened");
        let channel = handle
            .channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0)
            .await
            .map_err(|e| {
                self.settings.fail(SshFailure::Forward {
                    addr: format!("{host}:{port}"),
                    detail: e.to_string(),
                })
            })?;
        Ok(channel.into_stream())
    }

    async fn login(&self) -> Result<Handle<HostKeyCheck>, ConnectError> {
        let s = &self.settings;
        let config = Arc::new(client::Config {
            keepalive_interval: Some(Duration::from_secs(30)),
            nodelay: true,
            ..client::Config::default()
        });
        let check = HostKeyCheck {
            host: s.host.clone(),
            port: s.port,
            keys: s.host_keys.clone(),
        };
        let mut handle = client::connect(config, (s.host.as_str(), s.port), check)
            .await
            .map_err(|e| s.fail(e.into_failure()))?;
        let protocol = |e: russh::Error| s.fail(SshFailure::Protocol(e.to_string()));
        let result = match &s.auth {
            TunnelAuth::Password(p) => handle
                .authenticate_password(&s.user, p)
                .await
                .map_err(protocol)?,
            TunnelAuth::Key(text) => {
                let key = russh::keys::decode_secret_key(text, None)
                    .map_err(|e| s.fail(SshFailure::Key(e.to_string())))?;
                // RSA keys sign with the best hash the server takes (ssh-rsa/SHA-1 is often off).
                let hash = handle
                    .best_supported_rsa_hash()
                    .await
                    .map_err(protocol)?
                    .flatten()
                    .or(Some(HashAlg::Sha256));
                handle
                    .authenticate_publickey(
                        &s.user,
                        PrivateKeyWithHashAlg::new(Arc::new(key), hash),
                    )
                    .await
                    .map_err(protocol)?
            }
        };
        if !result.success() {
            return Err(s.fail(SshFailure::Authentication(s.user.clone())));
        }
        Ok(handle)
    }
}

/// The session handler: checks the host key, and fails the connection with the reason.
struct HostKeyCheck {
    host: String,
    port: u16,
    keys: HostKeys,
}

/// What a session fails with: an SSH error, or a refused host key.
#[derive(Debug)]
enum SessionError {
    Ssh(russh::Error),
    HostKey(SshFailure),
}

impl From<russh::Error> for SessionError {
    fn from(e: russh::Error) -> Self {
        SessionError::Ssh(e)
    }
}

impl SessionError {
    fn into_failure(self) -> SshFailure {
        match self {
            SessionError::HostKey(f) => f,
            SessionError::Ssh(russh::Error::IO(e)) => SshFailure::Connect(e.to_string()),
            SessionError::Ssh(e) => SshFailure::Protocol(e.to_string()),
        }
    }
}

impl client::Handler for HostKeyCheck {
    type Error = SessionError;

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> Result<bool, SessionError> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = offered else {
            return Err(SessionError::HostKey(SshFailure::Protocol(
                "the server offered a host certificate; only plain host keys are supported".into(),
            )));
        };
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let file = match &self.keys {
            HostKeys::AcceptAny => {
                tracing::warn!(
                    host = %self.host,
                    port = self.port,
                    %fingerprint,
                    "SSH host key accepted without a known-hosts check"
                );
                return Ok(true);
            }
            HostKeys::File(file) => file,
        };
        let shown = file.display().to_string();
        match russh::keys::check_known_hosts_path(&self.host, self.port, key, file) {
            Ok(true) => Ok(true),
            Ok(false) => Err(SessionError::HostKey(SshFailure::HostKeyUnknown {
                fingerprint,
                file: shown,
            })),
            Err(russh::keys::Error::KeyChanged { line }) => {
                Err(SessionError::HostKey(SshFailure::HostKeyChanged {
                    file: shown,
                    line,
                }))
            }
            Err(e) => Err(SessionError::HostKey(SshFailure::Protocol(format!(
                "cannot read {shown}: {e}"
            )))),
        }
    }
}
