//! `run(listener, config, shutdown)`: the tonic server with its auth layer, TLS, gRPC limits and the
//! background re-discovery task. Tests bind `127.0.0.1:0`; the binary passes a signal future.
//! `run_with` also hands out a [`LocalReader`] for callers in the same process.

use std::future::Future;

use futures::Stream;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Status};

use tokio::sync::Semaphore;

use crate::catalog::Catalog;
use crate::config::Config;
use crate::metrics::{MemoryBudget, Metrics};
use crate::plan::Planner;
use crate::scan::Scanner;
use crate::service::Service;
use crate::snapshot::Snapshots;
pub use crate::stream::ResumableBatch;
use crate::ticket::TicketSigner;

/// Largest gRPC message the server sends: a batch is cut at `scan::MAX_BATCH_BYTES` of values, so
/// this leaves room for offsets, validity and framing.
const MAX_ENCODED_MESSAGE: usize = 64 << 20;
/// Largest message accepted from clients (tickets and descriptors are small).
const MAX_DECODED_MESSAGE: usize = 4 << 20;
/// Concurrent streams one HTTP/2 connection may open.
const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The TLS certificate or key could not be read.
    #[error("cannot read TLS file {path}: {source}")]
    TlsFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The metrics address could not be bound.
    #[error("cannot listen for metrics on {addr}: {source}")]
    MetricsListen {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// tonic failed (bad TLS material, listener failure); the message is the innermost cause.
    #[error("cannot serve (TLS or transport set-up): {}", protocol::client::innermost(.0))]
    Transport(#[from] tonic::transport::Error),
}

/// Serves Flight on `listener` until `shutdown` completes; then stops accepting, lets running streams
/// finish for at most `shutdown_grace`, and returns.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    run_with(listener, config, shutdown, |_| {}).await
}

/// Reads endpoints of a server running in this process without going through Flight: the
/// Airbyte source's in-process service hands its batches to the JSON encoder this way.
#[derive(Clone)]
pub struct LocalReader(Arc<Service>);

impl LocalReader {
    /// DoGet of `ticket`: its batches, each with the ticket that resumes after it (as in the
    /// Flight stream's `app_metadata`); errors are the statuses DoGet would answer.
    pub async fn do_get(
        &self,
        ticket: &[u8],
    ) -> Result<impl Stream<Item = Result<ResumableBatch, Status>> + Send + 'static, Status> {
        self.0.read_local(ticket).await
    }

    /// GetFlightInfo of `descriptor` with every endpoint reading the exported snapshot `snapshot`
    /// (as `consistent_snapshot` does with one of its own): for a replication slot's snapshot, so
    /// a copy and the slot's changes meet exactly.
    pub async fn flight_info_at(
        &self,
        descriptor: arrow_flight::FlightDescriptor,
        snapshot: &str,
    ) -> Result<arrow_flight::FlightInfo, Status> {
        let request = crate::plan::TableRequest::from_descriptor(&descriptor)?;
        Ok(self
            .0
            .plan_info(request, descriptor, Some(snapshot))
            .await?
            .into_info())
    }
}

/// [`run`], handing `ready` the service's [`LocalReader`] once it is built (before serving).
pub async fn run_with(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(LocalReader),
) -> Result<(), ServerError> {
    let metrics = Arc::new(Metrics::new());
    let metrics_listener = crate::metrics::bind(config.metrics_listen)
        .await
        .map_err(|source| ServerError::MetricsListen {
            addr: config
                .metrics_listen
                .map(|a| a.to_string())
                .unwrap_or_default(),
            source,
        })?;
    let pool = crate::db::pool(&config);
    let catalog = Arc::new(Catalog::new(
        pool.clone(),
        config.cache_ttl,
        config.timescaledb_support,
        config.schemas.clone(),
        config.tables.clone(),
        metrics.clone(),
    ));
    let planner = Planner {
        signer: TicketSigner::new(config.ticket_secret.clone()),
        ticket_ttl: config.ticket_ttl,
        batch_rows: config.batch_rows,
        // PostgreSQL's default block size; a server built with another only splits differently.
        endpoint_blocks: (config.plain_endpoint_bytes / 8192) as i64,
        statement_timeout: config.statement_timeout,
        stall_timeout: config.stall_timeout,
    };
    let scanner = Scanner {
        pool: pool.clone(),
        slots: Arc::new(Semaphore::new(config.max_concurrent_chunks)),
        budget: Arc::new(MemoryBudget::new(config.max_memory_bytes, metrics.clone())),
        metrics: metrics.clone(),
    };
    let tail = Arc::new(crate::cdc::TailHub::new(
        config.tail.clone(),
        config.database.target().clone(),
        catalog.clone(),
        pool.clone(),
    ));
    let snapshots = Arc::new(Snapshots::new(pool, config.snapshot_idle));
    let service = Arc::new_cyclic(|this| {
        Service::new(
            this.clone(),
            catalog.clone(),
            planner,
            scanner,
            snapshots.clone(),
            tail,
            config.auth_token.clone(),
            crate::fleet::Fleet::new(&config.fleet),
        )
    });
    ready(LocalReader(service.clone()));
    let mut background = vec![
        tokio::spawn(rediscover(catalog, config.discovery_interval)),
        tokio::spawn(sweep_snapshots(snapshots.clone())),
    ];
    if let Some(l) = metrics_listener {
        let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(%addr, "serving /metrics");
        background.push(tokio::spawn(crate::metrics::serve(l, metrics)));
    }

    let mut builder = Server::builder().max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
    if let Some(tls) = &config.tls {
        // rustls has both its providers enabled in this build (ring here, aws-lc-rs through the
        // replication client's defaults), so it cannot pick one itself; tonic's acceptor needs one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let read = |path: &std::path::PathBuf| {
            std::fs::read(path).map_err(|source| ServerError::TlsFile {
                path: path.clone(),
                source,
            })
        };
        let identity = Identity::from_pem(read(&tls.cert)?, read(&tls.key)?);
        builder = builder.tls_config(ServerTlsConfig::new().identity(identity))?;
    }
    let token = config.auth_token.clone();
    let flight = crate::info_route::FlightRoutes::new(
        service.clone(),
        MAX_DECODED_MESSAGE,
        MAX_ENCODED_MESSAGE,
    );
    let throttle = Arc::new(AuthThrottle::default());
    let flight =
        tonic::service::interceptor::InterceptedService::new(flight, move |req: Request<()>| {
            let peer = req.remote_addr().map(|a| a.ip());
            throttle.check(peer)?;
            authorize(token.as_deref(), req).inspect_err(|_| throttle.failed(peer))
        });
    let addr = listener.local_addr().ok();
    if config.auth_token.is_none() && addr.is_some_and(|a| !a.ip().is_loopback()) {
        // Anyone who reaches this address reads everything the database role can.
        tracing::warn!(
            addr = %addr.map(|a| a.to_string()).unwrap_or_default(),
            "listening on a non-loopback address without auth_token: every client can read every exposed table; set auth_token (and TLS)"
        );
    }
    tracing::info!(addr = %addr.map(|a| a.to_string()).unwrap_or_default(), tls = config.tls.is_some(), "serving Flight");

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = builder.add_service(flight).serve_with_incoming_shutdown(
        // Without TCP_NODELAY a small response waits for the client's delayed ACK: ~40 ms per call.
        tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        async {
            let _ = stopped.await;
        },
    );
    tokio::pin!(served);
    let result = tokio::select! {
        r = &mut served => r,
        () = shutdown => {
            tracing::info!(grace = ?config.shutdown_grace, "shutting down: no new calls; running streams may finish");
            service.close();
            let _ = stop.send(());
            match tokio::time::timeout(config.shutdown_grace, &mut served).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!("shutdown grace period over; closing the streams still running");
                    Ok(())
                }
            }
        }
    };
    for task in background {
        task.abort();
    }
    snapshots.clear();
    Ok(result?)
}

/// Refreshes discovery every `interval` so new chunks appear without a client-side refresh.
async fn rediscover(catalog: Arc<Catalog>, interval: std::time::Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.tick().await; // the first tick is immediate; discovery runs on first use anyway
    loop {
        ticks.tick().await;
        if let Err(e) = catalog.refresh().await {
            tracing::warn!(error = %e, "background re-discovery failed");
        }
    }
}

/// Releases consistent snapshots whose tickets expired.
async fn sweep_snapshots(snapshots: Arc<Snapshots>) {
    let mut ticks = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        ticks.tick().await;
        snapshots.sweep(crate::service::now_ms());
    }
}

/// Checks the caller when a token is configured: `authorization: Bearer <token>`, or HTTP basic auth
/// whose password is the token (what pyarrow's `authenticate_basic_token` sends to Handshake).
fn authorize(expected: Option<&str>, req: Request<()>) -> Result<Request<()>, Status> {
    let Some(expected) = expected else {
        return Ok(req);
    };
    let given = req
        .metadata()
        .get("authorization")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    // The scheme and one space, as RFC 6750 writes it: `BearerTOKEN` is not a bearer token.
    let ok = if let Some(rest) = given.strip_prefix(b"Bearer ") {
        constant_time_eq(rest.trim_ascii(), expected.as_bytes())
    } else if let Some(rest) = given.strip_prefix(b"Basic ") {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(rest.trim_ascii())
            .ok()
            .and_then(|pair| {
                let colon = pair.iter().position(|&b| b == b':')?;
                Some(constant_time_eq(&pair[colon + 1..], expected.as_bytes()))
            })
            .unwrap_or(false)
    } else {
        false
    };
    if ok {
        Ok(req)
    } else {
        Err(Status::unauthenticated(
            "missing or wrong token (authorization: Bearer <token>)",
        ))
    }
}

/// Failed authentications allowed per client address and second; beyond them that address is
/// refused for the rest of the second, so tokens cannot be guessed at network speed, while other
/// clients are unaffected.
const AUTH_FAILURES_PER_SECOND: u32 = 20;

/// Failed authentications in the current second, by client address (reset every second, so it
/// stays small).
#[derive(Default)]
struct AuthThrottle(
    std::sync::Mutex<(
        u64,
        std::collections::HashMap<Option<std::net::IpAddr>, u32>,
    )>,
);

impl AuthThrottle {
    fn second() -> u64 {
        crate::service::now_ms().max(0) as u64 / 1000
    }

    /// Refuses the call while its address is over this second's limit.
    fn check(&self, peer: Option<std::net::IpAddr>) -> Result<(), Status> {
        let over = self.0.lock().is_ok_and(|s| {
            s.0 == Self::second()
                && s.1
                    .get(&peer)
                    .is_some_and(|&n| n >= AUTH_FAILURES_PER_SECOND)
        });
        if over {
            return Err(Status::resource_exhausted(
                "too many failed authentications; retry in a second",
            ));
        }
        Ok(())
    }

    fn failed(&self, peer: Option<std::net::IpAddr>) {
        if let Ok(mut s) = self.0.lock() {
            let now = Self::second();
            if s.0 != now {
                *s = (now, Default::default());
            }
            *s.1.entry(peer).or_default() += 1;
        }
    }
}

/// Equality whose time depends only on the lengths, so a token cannot be guessed byte by byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_authentications_are_throttled() {
        let t = AuthThrottle::default();
        let (guesser, other) = (Some([10, 0, 0, 1].into()), Some([10, 0, 0, 2].into()));
        for _ in 0..AUTH_FAILURES_PER_SECOND {
            assert!(t.check(guesser).is_ok());
            t.failed(guesser);
        }
        // Unless the second turned over just now, the guesser's next call is refused; others pass.
        let refused = t.check(guesser);
        let same_second = t.0.lock().unwrap().0 == AuthThrottle::second();
        assert_eq!(refused.is_err(), same_second);
        assert!(t.check(other).is_ok());
        if let Err(s) = refused {
            assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        }
    }

    #[test]
    fn bearer_token_is_checked() {
        let with = |v: Option<&str>| {
            let mut r = Request::new(());
            if let Some(v) = v {
                r.metadata_mut().insert("authorization", v.parse().unwrap());
            }
            r
        };
        assert!(authorize(None, with(None)).is_ok());
        assert!(authorize(Some("s3cret"), with(Some("Bearer s3cret"))).is_ok());
        // basic auth "anyone:s3cret", as pyarrow's authenticate_basic_token sends it
        assert!(authorize(Some("s3cret"), with(Some("Basic YW55b25lOnMzY3JldA=="))).is_ok());
        for bad in [
            None,
            Some("Bearer wrong!"),
            Some("Bearers3cret"),
            Some("s3cret"),
            Some("Bearer s3cre"),
            Some("Basic YW55b25lOndyb25n"), // anyone:wrong
            Some("Basic !!!"),
        ] {
            let e = authorize(Some("s3cret"), with(bad)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated);
        }
    }
}
