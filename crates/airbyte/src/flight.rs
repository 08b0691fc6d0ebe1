//! The Flight service the adapter reads from: [`server::server::run`] started in this process on
//! `127.0.0.1:0` (no `flight_url`), or a remote hyperflight server. Connections are
//! [`protocol::client`]'s: the same URL forms, message limits and windows as every Rust client.

use arrow_flight::FlightClient;
use protocol::client::{ClientConfig, ConnectError, Connection};
use protocol::{ActionName, Health};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::config::{DatabaseSettings, Service, SourceConfig};
use crate::database::Database;
use crate::Error;

/// A Flight service to read from; stops the in-process server when dropped.
pub struct FlightSource {
    /// The URL (as the user wrote it, or the loopback one) and its connection settings.
    client: ClientConfig,
    /// The in-process server, when there is one.
    in_process: Option<InProcess>,
}

/// A server this process started.
struct InProcess {
    /// Its endpoints read in this process, without Flight's encoding and transport.
    reader: server::server::LocalReader,
    /// Sending (or dropping) stops the server.
    stop: Option<oneshot::Sender<()>>,
    /// The server's task, awaited at shutdown so running calls finish first.
    task: tokio::task::JoinHandle<Result<(), server::server::ServerError>>,
}

impl FlightSource {
    /// Points at `flight_url`, or connects to PostgreSQL once (so bad credentials become a readable
    /// config error rather than a bare "database error" through Flight) and starts the service
    /// in-process.
    pub async fn start(config: &SourceConfig) -> Result<FlightSource, Error> {
        let (client, in_process) = match &config.service {
            Service::Remote {
                url,
                token,
                tls_root_certs,
            } => (
                ClientConfig {
                    url: url.clone(),
                    token: token.as_ref().map(|t| t.expose().to_string()),
                    tls_root_certs: tls_root_certs.as_ref().map(|p| p.as_bytes().to_vec()),
                    ..ClientConfig::default()
                },
                None,
            ),
            Service::InProcess(db) => {
                drop(Database::connect(db).await?);
                let (url, server) = start_in_process(config, db).await?;
                (
                    ClientConfig {
                        url,
                        ..ClientConfig::default()
                    },
                    Some(server),
                )
            }
        };
        Ok(FlightSource { client, in_process })
    }

    /// The service's URL.
    pub fn url(&self) -> &str {
        &self.client.url
    }

    /// Whether this is a remote server (`flight_url`).
    pub fn is_remote(&self) -> bool {
        self.in_process.is_none()
    }

    /// A client on a new connection (one per parallel chunk reader, so streams do not share one
    /// TCP connection's flow control).
    pub async fn client(&self) -> Result<FlightClient, Error> {
        Ok(self.connect().await?.client())
    }

    /// A client of another location of an endpoint (a fleet's peer), with this service's token
    /// and TLS roots.
    pub async fn client_of(&self, url: &str) -> Result<FlightClient, Error> {
        let config = ClientConfig {
            url: url.to_string(),
            ..self.client.clone()
        };
        Ok(connect(&config).await?.client())
    }

    /// Whether `url` names this service itself (a location that says "this connection").
    pub fn is_self(&self, url: &str) -> bool {
        url == self.client.url || url == protocol::client::REUSE_CONNECTION
    }

    /// The in-process service's reader, when the service runs in this process.
    pub fn local(&self) -> Option<&server::server::LocalReader> {
        self.in_process.as_ref().map(|s| &s.reader)
    }

    /// DoAction `health`: the service is up and reaches its database.
    pub async fn health(&self) -> Result<Health, Error> {
        let context = "Flight health check";
        let body = self
            .connect()
            .await?
            .action(ActionName::Health)
            .await
            .map_err(|e| Error::flight(context, e))?;
        serde_json::from_slice(&body).map_err(|e| Error::Protocol {
            context: context.into(),
            message: format!("unexpected answer: {e}"),
        })
    }

    async fn connect(&self) -> Result<Connection, Error> {
        connect(&self.client).await
    }

    /// Stops the in-process service (running calls finish first).
    pub async fn shutdown(mut self) {
        let Some(mut server) = self.in_process.take() else {
            return;
        };
        if let Some(stop) = server.stop.take() {
            let _ = stop.send(());
        }
        match server.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "in-process Flight service failed"),
            Err(e) => tracing::warn!(error = %e, "in-process Flight service panicked"),
        }
    }
}

impl Drop for FlightSource {
    fn drop(&mut self) {
        if let Some(stop) = self.in_process.as_mut().and_then(|s| s.stop.take()) {
            let _ = stop.send(());
        }
    }
}

async fn connect(config: &ClientConfig) -> Result<Connection, Error> {
    Connection::open(config).await.map_err(|e| match e {
        ConnectError::Url { .. } => Error::InvalidConfig {
            setting: "flight_url",
            message: e.to_string(),
        },
        ConnectError::Transport { .. } => Error::Connect(e),
    })
}

/// Starts the service on a loopback port; returns its `grpc://` URL.
async fn start_in_process(
    config: &SourceConfig,
    db: &DatabaseSettings,
) -> Result<(String, InProcess), Error> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Error::Server(format!("cannot bind a loopback port: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Server(e.to_string()))?;
    let server_config = config.server_config(db)?;
    let (stop, stopped) = oneshot::channel::<()>();
    let (ready, reader) = oneshot::channel();
    let mut task = tokio::spawn(server::server::run_with(
        listener,
        server_config,
        async {
            let _ = stopped.await;
        },
        move |r| {
            let _ = ready.send(r);
        },
    ));
    let reader = match reader.await {
        Ok(r) => r,
        // The server stopped before it was built: its error says why.
        Err(_) => {
            let why = match (&mut task).await {
                Ok(Err(e)) => e.to_string(),
                Ok(Ok(())) => "it stopped".into(),
                Err(e) => e.to_string(),
            };
            return Err(Error::Server(format!(
                "the in-process Flight service failed: {why}"
            )));
        }
    };
    Ok((
        format!("grpc://{addr}"),
        InProcess {
            reader,
            stop: Some(stop),
            task,
        },
    ))
}
