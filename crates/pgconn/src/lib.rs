//! Connecting to PostgreSQL the way libpq does, for every part of hyperflight that connects (the
//! server's pool, the Airbyte source, the load test):
//!
//! - [`target`]: the connection string (URL or key=value), settings, `PG*` variables and
//!   `.pgpass`, resolved into a [`Target`];
//! - `tls`: libpq's six sslmodes on rustls, with sslrootcert (a file or `system`), sslcert and sslkey;
//! - `tunnel`: SSH tunnels with key or password authentication and a host-key check (russh);
//! - [`ConnectError`]: why a connection failed, in terms of what to fix, without secrets.
//!
//! [`Connector`] puts them together: `connect` returns a ready client whose connection task runs
//! on its own.

mod error;
pub mod target;
mod tls;
mod tunnel;

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::config::{Host, SslMode as WireMode};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{CancelToken, Client};
use tokio_postgres_rustls::MakeRustlsConnect;

pub use error::{ConnectError, SshFailure, TlsFailure};
pub use target::{Params, Pem, ProcessEnv, RootCert, SslMode, Target, TlsOptions};
pub use tunnel::{HostKeys, TunnelAuth, TunnelSettings};

/// Used when neither the connection string nor `PGCONNECT_TIMEOUT` gives one.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens connections to one [`Target`].
#[derive(Clone)]
pub struct Connector {
    target: Arc<Target>,
    tls: MakeRustlsConnect,
    tunnel: Option<Arc<tunnel::Tunnel>>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("target", &self.target)
            .field("tunnel", &self.target.tunnel)
            .finish()
    }
}

/// One way of trying: TLS asked for or not.
#[derive(Clone, Copy)]
enum Try {
    Plain,
    TlsIfOffered,
    Tls,
}

impl Connector {
    /// Reads the certificate files now, so a missing or malformed one is an error before any
    /// connection is tried. With a tunnel, the target must name one TCP host.
    pub fn new(target: Target) -> Result<Connector, ConnectError> {
        let tls = tls::connector(&target.tls)?;
        let tunnel = match &target.tunnel {
            None => None,
            Some(settings) => {
                if target.pg.get_hosts().len() != 1
                    || !matches!(target.pg.get_hosts()[0], Host::Tcp(_))
                {
                    return Err(ConnectError::Config(
                        "an SSH tunnel needs exactly one database host name (not a socket path or a list)".into(),
                    ));
                }
                Some(Arc::new(tunnel::Tunnel::new(settings.clone())))
            }
        };
        Ok(Connector {
            target: Arc::new(target),
            tls,
            tunnel,
        })
    }

    /// The same connector with session parameters changed; TLS and the tunnel are shared.
    pub fn with_session(&self, change: impl FnOnce(&mut tokio_postgres::Config)) -> Connector {
        let mut target = (*self.target).clone();
        change(&mut target.pg);
        Connector {
            target: Arc::new(target),
            tls: self.tls.clone(),
            tunnel: self.tunnel.clone(),
        }
    }

    /// What this connects to.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// A connected client; its connection runs in a spawned task until the client is dropped.
    /// `allow` and `prefer` try the other way when the server's `pg_hba.conf` refuses the first.
    pub async fn connect(&self) -> Result<Client, ConnectError> {
        let tries: &[Try] = match self.target.tls.mode {
            SslMode::Disable => &[Try::Plain],
            SslMode::Allow => &[Try::Plain, Try::Tls],
            SslMode::Prefer => &[Try::TlsIfOffered, Try::Plain],
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => &[Try::Tls],
        };
        let mut last = None;
        for way in tries {
            match self.attempt(*way).await {
                Ok(client) => return Ok(client),
                Err(e) if matches!(e, ConnectError::Rejected(_)) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    async fn attempt(&self, way: Try) -> Result<Client, ConnectError> {
        let mut pg = self.target.pg.clone();
        pg.ssl_mode(match way {
            Try::Plain => WireMode::Disable,
            Try::TlsIfOffered => WireMode::Prefer,
            Try::Tls => WireMode::Require,
        });
        let timeout = pg
            .get_connect_timeout()
            .copied()
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        pg.connect_timeout(timeout);
        let connected = match &self.tunnel {
            None => pg
                .connect(self.tls.clone())
                .await
                .map(|(client, connection)| {
                    tokio::spawn(drive(connection));
                    client
                }),
            Some(tunnel) => {
                let (stream, handshake) = self.through(tunnel, timeout).await?;
                tokio::time::timeout(timeout, pg.connect_raw(stream, handshake))
                    .await
                    .map_err(|_| ConnectError::Timeout(self.target.address()))?
                    .map(|(client, connection)| {
                        tokio::spawn(drive(connection));
                        client
                    })
            }
        };
        connected.map_err(|e| {
            let (host, _) = self.host_port();
            let at = error::Attempt {
                addr: &self.target.address(),
                host: &host,
                role: self.target.role(),
                database: self.target.database(),
                client_certificate: self.target.tls.client.is_some(),
            };
            error::classify(&e, &at)
        })
    }

    /// Asks the server to cancel what `token`'s session runs, the way the session was reached.
    pub async fn cancel(&self, token: &CancelToken) -> Result<(), ConnectError> {
        let at = self.target.address();
        let failed = |e: tokio_postgres::Error| ConnectError::Other(format!("cancel at {at}: {e}"));
        match &self.tunnel {
            None => token.cancel_query(self.tls.clone()).await.map_err(failed),
            Some(tunnel) => {
                let (stream, handshake) = self.through(tunnel, DEFAULT_CONNECT_TIMEOUT).await?;
                token
                    .cancel_query_raw(stream, handshake)
                    .await
                    .map_err(failed)
            }
        }
    }

    /// The database host name (for TLS) and port.
    fn host_port(&self) -> (String, u16) {
        let host = match self.target.pg.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            _ => "localhost".into(),
        };
        (
            host,
            self.target.pg.get_ports().first().copied().unwrap_or(5432),
        )
    }

    /// A stream to the database through `tunnel`, and the TLS handshake for the database's name.
    async fn through(
        &self,
        tunnel: &tunnel::Tunnel,
        timeout: Duration,
    ) -> Result<
        (
            Channel,
            <MakeRustlsConnect as MakeTlsConnect<Channel>>::TlsConnect,
        ),
        ConnectError,
    > {
        let (host, port) = self.host_port();
        let stream = tunnel.open(&host, port, timeout).await?;
        let handshake = MakeTlsConnect::<Channel>::make_tls_connect(&mut self.tls.clone(), &host)
            .map_err(|e| ConnectError::Config(format!("TLS: {e}")))?;
        Ok((stream, handshake))
    }
}

/// A tunnelled connection's byte stream.
type Channel = russh::ChannelStream<russh::client::Msg>;

/// Runs a connection until its client is dropped or the server goes away.
async fn drive<F: std::future::Future<Output = Result<(), tokio_postgres::Error>>>(connection: F) {
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "PostgreSQL connection ended");
    }
}
