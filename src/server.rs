//! `run(listener, config, shutdown)`: the tonic server with its auth layer, TLS, gRPC limits and the
//! background re-discovery task. Tests bind `127.0.0.1:0`; the binary passes a signal future.

use std::future::Future;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Status};

use crate::catalog::Catalog;
use crate::config::Config;
use crate::plan::Planner;
use crate::service::Service;
use crate::snapshot::Snapshots;
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
    /// tonic failed (bad TLS material, listener failure).
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves Flight on `listener` until `shutdown` completes; then stops accepting and lets running
/// calls finish.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let pool = crate::db::pool(&config);
    let catalog = Arc::new(Catalog::new(
        pool.clone(),
        config.cache_ttl,
        config.timescaledb_support,
        config.schemas.clone(),
    ));
    let planner = Planner {
        signer: TicketSigner::new(config.ticket_secret.clone()),
        ticket_ttl: config.ticket_ttl,
        batch_rows: config.batch_rows,
        // PostgreSQL's default block size; a server built with another only splits differently.
        endpoint_blocks: (config.plain_endpoint_bytes / 8192) as i64,
        statement_timeout: config.statement_timeout,
    };
    let snapshots = Arc::new(Snapshots::new(pool.clone()));
    let service = Arc::new(Service::new(
        catalog.clone(),
        planner,
        pool,
        snapshots.clone(),
        config.max_concurrent_chunks,
    ));
    let rediscovery = tokio::spawn(rediscover(catalog, config.discovery_interval));
    let sweeper = tokio::spawn(sweep_snapshots(snapshots.clone()));

    let mut builder = Server::builder().max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
    if let Some(tls) = &config.tls {
        let read = |path: &std::path::PathBuf| {
            std::fs::read(path).map_err(|source| ServerError::TlsFile {
                path: path.clone(),
                source,
            })
        };
        let identity = Identity::from_pem(read(&tls.cert)?, read(&tls.key)?);
        builder = builder.tls_config(ServerTlsConfig::new().identity(identity))?;
    }
    let token = config.auth_token.map(|t| format!("Bearer {t}"));
    let flight = FlightServiceServer::from_arc(service.clone())
        .max_encoding_message_size(MAX_ENCODED_MESSAGE)
        .max_decoding_message_size(MAX_DECODED_MESSAGE);
    let flight = tonic::service::interceptor::InterceptedService::new(flight, move |req| {
        authorize(token.as_deref(), req)
    });
    tracing::info!(addr = ?listener.local_addr().ok(), tls = config.tls.is_some(), "serving Flight");
    let served = builder
        .add_service(flight)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
            shutdown.await;
            tracing::info!("shutting down: no new calls; running streams finish");
            service.close();
        })
        .await;
    rediscovery.abort();
    sweeper.abort();
    snapshots.clear();
    Ok(served?)
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
    let mut ticks = tokio::time::interval(std::time::Duration::from_secs(10));
    loop {
        ticks.tick().await;
        snapshots.sweep(crate::service::now_ms());
    }
}

/// Checks `authorization: Bearer <token>` when a token is configured.
fn authorize(expected: Option<&str>, req: Request<()>) -> Result<Request<()>, Status> {
    let Some(expected) = expected else {
        return Ok(req);
    };
    let given = req
        .metadata()
        .get("authorization")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if constant_time_eq(given, expected.as_bytes()) {
        Ok(req)
    } else {
        Err(Status::unauthenticated(
            "missing or wrong bearer token (authorization: Bearer <token>)",
        ))
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
    fn bearer_token_is_checked() {
        let with = |v: Option<&str>| {
            let mut r = Request::new(());
            if let Some(v) = v {
                r.metadata_mut().insert("authorization", v.parse().unwrap());
            }
            r
        };
        assert!(authorize(None, with(None)).is_ok());
        assert!(authorize(Some("Bearer s3cret"), with(Some("Bearer s3cret"))).is_ok());
        for bad in [
            None,
            Some("Bearer wrong!"),
            Some("s3cret"),
            Some("Bearer s3cre"),
        ] {
            let e = authorize(Some("Bearer s3cret"), with(bad)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated);
        }
    }
}
