//! The Flight service the adapter reads from: [`server::server::run`] started in this process on
//! `127.0.0.1:0` (no `flight_url`), or a remote hyperflight server.

use std::time::Duration;

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{Action, FlightClient};
use futures::TryStreamExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint};

use crate::config::SourceConfig;
use crate::Error;

/// Largest message accepted from the server: it cuts batches at 16 MiB of values and may send up
/// to 64 MiB messages; the client's 4 MiB default would refuse wide batches.
const MAX_DECODED_MESSAGE: usize = 128 << 20;
/// HTTP/2 windows large enough that a multi-megabyte batch does not wait on window updates.
const STREAM_WINDOW: u32 = 16 << 20;
const CONNECTION_WINDOW: u32 = 64 << 20;

/// A Flight service to read from; stops the in-process server when dropped.
pub struct FlightSource {
    endpoint: Endpoint,
    url: String,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<Result<(), server::server::ServerError>>>,
}

impl FlightSource {
    /// Starts the in-process service, or points at `flight_url`.
    pub async fn start(config: &SourceConfig) -> Result<FlightSource, Error> {
        let (url, stop, server) = match &config.flight_url {
            Some(url) => (url.clone(), None, None),
            None => {
                let listener = TcpListener::bind("127.0.0.1:0")
                    .await
                    .map_err(|e| Error::Server(format!("cannot bind a loopback port: {e}")))?;
                let addr = listener
                    .local_addr()
                    .map_err(|e| Error::Server(e.to_string()))?;
                let server_config = config.server_config()?;
                let (stop, stopped) = oneshot::channel::<()>();
                let server = tokio::spawn(server::server::run(listener, server_config, async {
                    let _ = stopped.await;
                }));
                (format!("http://{addr}"), Some(stop), Some(server))
            }
        };
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| Error::InvalidConfig {
                setting: "flight_url",
                message: e.to_string(),
            })?
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW);
        Ok(FlightSource {
            endpoint,
            url,
            stop,
            server,
        })
    }

    /// Whether the service runs in this process.
    pub fn in_process(&self) -> bool {
        self.server.is_some()
    }

    /// A client on a new connection (one per parallel chunk reader, so streams do not share one
    /// TCP connection's flow control).
    pub async fn client(&self) -> Result<FlightClient, Error> {
        let channel: Channel = self.endpoint.connect().await.map_err(|e| Error::Connect {
            context: format!("cannot connect to the Flight service at {}", self.url),
            message: transport_cause(&e),
        })?;
        let inner =
            FlightServiceClient::new(channel).max_decoding_message_size(MAX_DECODED_MESSAGE);
        Ok(FlightClient::new_from_inner(inner))
    }

    /// DoAction `health`: the service is up and reaches the database; returns its JSON answer.
    pub async fn health(&self) -> Result<serde_json::Value, Error> {
        let mut client = self.client().await?;
        let context = "Flight health check";
        let mut answers = client
            .do_action(Action::new("health", ""))
            .await
            .map_err(|e| Error::flight(context, e))?;
        let body = answers
            .try_next()
            .await
            .map_err(|e| Error::flight(context, e))?
            .unwrap_or_default();
        serde_json::from_slice(&body).map_err(|e| Error::Protocol {
            context: context.into(),
            message: format!("answer is not JSON: {e}"),
        })
    }

    /// Stops the in-process service (running calls finish first).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            match server.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "in-process Flight service failed"),
                Err(e) => tracing::warn!(error = %e, "in-process Flight service panicked"),
            }
        }
    }
}

impl Drop for FlightSource {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The innermost message of a transport error ("Connection refused" rather than "transport error").
fn transport_cause(e: &tonic::transport::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = s.to_string();
        source = s.source();
    }
    text
}
