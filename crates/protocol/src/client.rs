//! The client side every Rust client shares: a connection (URL, TLS, bearer token, message limits)
//! and a DoGet loop that survives a broken stream by resuming from the last batch's ticket, at the
//! endpoint's next location when it lists several (a fleet of servers, see the README's Scale-out).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow_flight::decode::DecodedPayload;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{Action, FlightClient, FlightEndpoint, Ticket};
use bytes::Bytes;
use futures::StreamExt;
use rand::Rng;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::Code;

use crate::action::ActionName;
use crate::status::{classify, code_name, Retry};

/// Largest message accepted or sent: the server cuts batches at 16 MiB of values, and IPC framing
/// adds to that; stock gRPC clients refuse anything over 4 MiB.
pub const MAX_MESSAGE_BYTES: usize = 128 << 20;
/// HTTP/2 windows large enough that a multi-megabyte batch does not wait on window updates.
const STREAM_WINDOW: u32 = 16 << 20;
const CONNECTION_WINDOW: u32 = 64 << 20;

/// Why a connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL is not `grpc://host:port`, `grpc+tls://host:port` or `http(s)://host:port`.
    #[error("invalid Flight URL {url:?}: {message}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The transport failed (refused, unreachable, TLS).
    #[error("cannot connect to {url}: {message}")]
    Transport {
        /// The URL as the user gave it.
        url: String,
        /// The innermost cause.
        message: String,
    },
}

/// How to reach a server.
#[derive(Clone, Default)]
pub struct ClientConfig {
    /// `grpc://host:port`, `grpc+tls://host:port` (or `http://`, `https://`).
    pub url: String,
    /// Sent as `authorization: Bearer <token>` on every call.
    pub token: Option<String>,
    /// PEM roots that verify a TLS server; the system's web roots when absent.
    pub tls_root_certs: Option<Vec<u8>>,
    /// Limit on a connection attempt; 10 s when absent.
    pub connect_timeout: Option<Duration>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("tls_root_certs", &self.tls_root_certs.is_some())
            .finish()
    }
}

/// Flight's location URI for "the server this FlightInfo came from" (arrow-flight 15+).
pub const REUSE_CONNECTION: &str = "arrow-flight-reuse-connection://?";

/// A channel to a server (connected lazily, shared by clones) and the token its calls carry.
#[derive(Clone)]
pub struct Connection {
    channel: Channel,
    url: String,
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    /// How this connection was made, for connections to the other locations endpoints list.
    config: ClientConfig,
    /// Those connections, by URL, shared by clones (one channel per server, not per endpoint).
    peers: Arc<Mutex<HashMap<String, Connection>>>,
}

impl Connection {
    /// A connection that opens on first use, so a server that is down now fails calls, not set-up.
    pub fn lazy(config: &ClientConfig) -> Result<Connection, ConnectError> {
        let endpoint = endpoint(config)?;
        Ok(Connection {
            channel: endpoint.connect_lazy(),
            url: config.url.clone(),
            token: token_header(config)?,
            config: config.clone(),
            peers: Arc::default(),
        })
    }

    /// One client per location `endpoint` lists, in its order, each with this connection's token
    /// and TLS roots (this connection itself for its own URL and [`REUSE_CONNECTION`]); this
    /// connection's client alone when it lists none. A location that is not a Flight URL is an
    /// error, not skipped: skipping would hide a misconfigured fleet.
    pub fn endpoint_clients(
        &self,
        endpoint: &FlightEndpoint,
    ) -> Result<Vec<FlightClient>, ConnectError> {
        let mut clients = Vec::with_capacity(endpoint.location.len().max(1));
        for location in &endpoint.location {
            let uri = location.uri.as_str();
            if uri == REUSE_CONNECTION || uri == self.url {
                clients.push(self.client());
                continue;
            }
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            let peer = match peers.get(uri) {
                Some(p) => p.clone(),
                None => {
                    let config = ClientConfig {
                        url: uri.to_string(),
                        ..self.config.clone()
                    };
                    let p = Connection::lazy(&config)?;
                    peers.insert(uri.to_string(), p.clone());
                    p
                }
            };
            clients.push(peer.client());
        }
        if clients.is_empty() {
            clients.push(self.client());
        }
        Ok(clients)
    }

    /// A connection opened now: a refused or failed connection is reported here.
    pub async fn open(config: &ClientConfig) -> Result<Connection, ConnectError> {
        let endpoint = endpoint(config)?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| ConnectError::Transport {
                url: config.url.clone(),
                message: innermost(&e),
            })?;
        Ok(Connection {
            channel,
            url: config.url.clone(),
            token: token_header(config)?,
            config: config.clone(),
            peers: Arc::default(),
        })
    }

    /// The URL as the user gave it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A Flight client on this connection, with the token and the message limits.
    pub fn client(&self) -> FlightClient {
        let inner = FlightServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let mut client = FlightClient::new_from_inner(inner);
        if let Some(t) = &self.token {
            if let Ok(v) = t.to_str() {
                // The value was checked as ASCII when the connection was made.
                let _ = client.add_header("authorization", v);
            }
        }
        client
    }

    /// DoAction `action`; the first result's body.
    pub async fn action(&self, action: ActionName) -> Result<Bytes, FlightError> {
        let mut client = self.client();
        let mut results = client
            .do_action(Action::new(action.as_str(), Bytes::new()))
            .await?;
        match results.next().await {
            Some(body) => body,
            None => Ok(Bytes::new()),
        }
    }
}

fn endpoint(config: &ClientConfig) -> Result<Endpoint, ConnectError> {
    let url = config.url.trim();
    let bad = |message: String| ConnectError::Url {
        url: config.url.clone(),
        message,
    };
    let (tls, rest) = if let Some(r) = url.strip_prefix("grpc+tls://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url
        .strip_prefix("grpc://")
        .or_else(|| url.strip_prefix("grpc+tcp://"))
    {
        (false, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(bad("use grpc://host:port or grpc+tls://host:port".into()));
    };
    let http = format!("{}://{}", if tls { "https" } else { "http" }, rest);
    let mut endpoint = Endpoint::from_shared(http)
        .map_err(|e| bad(e.to_string()))?
        .connect_timeout(config.connect_timeout.unwrap_or(Duration::from_secs(10)))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW);
    if tls {
        let mut tls_config = ClientTlsConfig::new();
        tls_config = match &config.tls_root_certs {
            Some(pem) => tls_config.ca_certificate(Certificate::from_pem(pem)),
            None => tls_config.with_webpki_roots(),
        };
        endpoint = endpoint
            .tls_config(tls_config)
            .map_err(|e| bad(innermost(&e)))?;
    } else if config.tls_root_certs.is_some() {
        return Err(bad(
            "TLS root certificates given for a plain grpc:// URL; use grpc+tls://".into(),
        ));
    }
    Ok(endpoint)
}

fn token_header(
    config: &ClientConfig,
) -> Result<Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>, ConnectError> {
    config
        .token
        .as_ref()
        .map(|t| {
            format!("Bearer {t}")
                .parse()
                .map_err(|_| ConnectError::Url {
                    url: config.url.clone(),
                    message: "the token must be printable ASCII".into(),
                })
        })
        .transpose()
}

/// The innermost message of an error chain ("Connection refused" rather than "transport error").
pub fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = s.to_string();
        source = s.source();
    }
    text
}

/// How hard a read tries before it gives up.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries per endpoint, after the first attempt.
    pub retries: u32,
    /// Wait before the first retry; doubles with each, with jitter.
    pub backoff: Duration,
    /// Cap on one wait.
    pub max_backoff: Duration,
    /// A call or stream that delivers nothing for this long counts as broken (and is retried).
    pub stall: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 5,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            stall: None,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self
            .backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_backoff);
        // Jitter spreads out the clients that all lost their streams at the same moment.
        base.mul_f64(rand::thread_rng().gen_range(0.5..1.5))
    }
}

/// Why a read failed: a gRPC code, or a code of the client's own (`STALLED`, `DECODE`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ReadError {
    /// gRPC's name for the code, or `STALLED` / `DECODE`.
    pub code: &'static str,
    /// The gRPC code, when the server (or transport) sent one.
    pub grpc: Option<Code>,
    /// The status message.
    pub message: String,
    /// What to do about it.
    pub retry: Retry,
}

impl From<FlightError> for ReadError {
    fn from(e: FlightError) -> Self {
        match e {
            FlightError::Tonic(status) => ReadError {
                code: code_name(status.code()),
                grpc: Some(status.code()),
                message: status.message().to_string(),
                retry: classify(status.code()),
            },
            other => ReadError {
                code: "DECODE",
                grpc: None,
                message: other.to_string(),
                retry: Retry::Fatal,
            },
        }
    }
}

impl ReadError {
    /// Nothing arrived for `after`: treated like a broken connection.
    pub fn stalled(what: &str, after: Duration) -> ReadError {
        ReadError {
            code: "STALLED",
            grpc: None,
            message: format!("{what}: nothing received for {after:?}"),
            retry: Retry::Resume,
        }
    }
}

/// What a resumable read reports as it goes.
pub enum ReadEvent {
    /// A batch, with the ticket that resumes after it (absent where the endpoint has none) and its
    /// size on the wire.
    Batch {
        /// The rows.
        batch: RecordBatch,
        /// Resumes after this batch.
        resume: Option<Bytes>,
        /// IPC header + body bytes.
        wire_bytes: u64,
    },
    /// The stream broke and is read again: from the last resume ticket (`resumed`), so batches
    /// after that ticket's batch come again; or from the endpoint's start, so every batch does.
    Retry {
        /// Why.
        error: ReadError,
        /// Whether the retry continues from a resume ticket.
        resumed: bool,
        /// 1-based retry number.
        attempt: u32,
        /// Index of the location (in the `clients` given to [`read_endpoint`]) the retry reads from.
        location: usize,
    },
}

/// Reads one endpoint to its end, retrying transient failures from the last resume ticket, and
/// hands every event to `on_event`. An error from `on_event` stops the read and is returned.
/// `clients` are the endpoint's locations (see [`Connection::endpoint_clients`]): the read starts at
/// the first, and each retry goes to the next one round the list, so a server that is down or
/// behind (UNAVAILABLE) is left for the next, which continues after the last batch delivered.
pub async fn read_endpoint<E: From<ReadError>>(
    clients: &mut [FlightClient],
    ticket: Bytes,
    policy: &RetryPolicy,
    mut on_event: impl FnMut(ReadEvent) -> Result<(), E>,
) -> Result<(), E> {
    if clients.is_empty() {
        return Err(ReadError {
            code: "NO_LOCATION",
            grpc: None,
            message: "the endpoint has no location to read from".into(),
            retry: Retry::Fatal,
        }
        .into());
    }
    let mut resume: Option<Bytes> = None;
    let mut attempt = 0;
    let mut at = 0;
    loop {
        let t = resume.clone().unwrap_or_else(|| ticket.clone());
        let client = &mut clients[at];
        match stream_once(client, t, policy.stall, &mut resume, &mut on_event).await {
            Ok(()) => return Ok(()),
            Err(Stop::Consumer(e)) => return Err(e),
            Err(Stop::Read(e)) if e.retry == Retry::Resume && attempt < policy.retries => {
                attempt += 1;
                at = (at + 1) % clients.len();
                let resumed = resume.is_some();
                tracing::debug!(code = e.code, message = %e.message, attempt, resumed, location = at, "retrying endpoint");
                on_event(ReadEvent::Retry {
                    error: e,
                    resumed,
                    attempt,
                    location: at,
                })?;
                tokio::time::sleep(policy.delay(attempt)).await;
            }
            Err(Stop::Read(e)) => return Err(e.into()),
        }
    }
}

enum Stop<E> {
    Read(ReadError),
    Consumer(E),
}

async fn stream_once<E>(
    client: &mut FlightClient,
    ticket: Bytes,
    stall: Option<Duration>,
    resume: &mut Option<Bytes>,
    on_event: &mut impl FnMut(ReadEvent) -> Result<(), E>,
) -> Result<(), Stop<E>> {
    let read = |e: FlightError| Stop::Read(ReadError::from(e));
    let stream = within(stall, "DoGet", client.do_get(Ticket::new(ticket)))
        .await
        .map_err(Stop::Read)?
        .map_err(read)?;
    let mut stream = stream.into_inner();
    loop {
        let Some(data) = within(stall, "stream", stream.next())
            .await
            .map_err(Stop::Read)?
        else {
            return Ok(());
        };
        let data = data.map_err(read)?;
        if let DecodedPayload::RecordBatch(batch) = data.payload {
            let wire_bytes = (data.inner.data_header.len() + data.inner.data_body.len()) as u64;
            let ticket = (!data.inner.app_metadata.is_empty()).then_some(data.inner.app_metadata);
            if ticket.is_some() {
                resume.clone_from(&ticket);
            }
            on_event(ReadEvent::Batch {
                batch,
                resume: ticket,
                wire_bytes,
            })
            .map_err(Stop::Consumer)?;
        }
    }
}

async fn within<T>(
    limit: Option<Duration>,
    what: &str,
    f: impl std::future::Future<Output = T>,
) -> Result<T, ReadError> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, f)
            .await
            .map_err(|_| ReadError::stalled(what, limit)),
        None => Ok(f.await),
    }
}
