//! Metrics: the Prometheus names in one place, the server-wide memory budget they report on, and the
//! `/metrics` HTTP endpoint. `DoAction stats` returns the same figures as JSON.
//!
//! Labels stay low-cardinality: no table or chunk names, only the gRPC code on errors.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response};
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Rows sent in DoGet streams.
pub const ROWS_STREAMED: &str = "hyperflight_rows_streamed_total";
/// Arrow IPC bytes sent in DoGet streams.
pub const BYTES_STREAMED: &str = "hyperflight_bytes_streamed_total";
/// Endpoints (chunks, partitions, block ranges) read to their end.
pub const CHUNKS_STREAMED: &str = "hyperflight_chunks_streamed_total";
/// DoGet streams that ended with an error, by gRPC code.
pub const STREAM_ERRORS: &str = "hyperflight_stream_errors_total";
/// DoGet streams open now.
pub const ACTIVE_STREAMS: &str = "hyperflight_active_streams";
/// Scans holding a `max_concurrent_chunks` slot now.
pub const ACTIVE_SCANS: &str = "hyperflight_active_scans";
/// Bytes of decoded batches buffered in the server now (the `max_memory_mb` budget in use).
pub const MEMORY_RESERVED: &str = "hyperflight_memory_reserved_bytes";
/// Discovery served from the cache.
pub const CACHE_HITS: &str = "hyperflight_discovery_cache_hits_total";
/// Discovery run against the database.
pub const CACHE_MISSES: &str = "hyperflight_discovery_cache_misses_total";
/// Discoveries that fell back to a degraded mode (TimescaleDB's catalog unreadable).
pub const DISCOVERY_FALLBACKS: &str = "hyperflight_discovery_fallbacks_total";
/// Batches that waited for room in the `max_memory_mb` budget.
pub const MEMORY_WAITS: &str = "hyperflight_memory_reservation_waits_total";
/// Time from the start of an endpoint's scan to its last batch.
pub const CHUNK_SECONDS: &str = "hyperflight_chunk_stream_seconds";

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    /// Rows sent.
    pub rows: IntCounter,
    /// IPC bytes sent.
    pub bytes: IntCounter,
    /// Endpoints read to the end.
    pub chunks: IntCounter,
    /// Streams ended by an error, by code.
    pub errors: IntCounterVec,
    /// Open DoGet streams.
    pub active_streams: IntGauge,
    /// Running scans.
    pub active_scans: IntGauge,
    /// Budget in use, bytes.
    pub memory_reserved: IntGauge,
    /// Discovery cache hits.
    pub cache_hits: IntCounter,
    /// Discovery cache misses.
    pub cache_misses: IntCounter,
    /// Per-endpoint stream duration.
    pub chunk_seconds: Histogram,
    /// Discoveries that fell back to serving hypertables as plain tables.
    pub discovery_fallbacks: IntCounter,
    /// Reservations that had to wait for budget.
    pub memory_waits: IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh metrics in their own registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        fn reg<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
            r.register(Box::new(c.clone()))
                .expect("metric names are unique and valid");
            c
        }
        let counter = |name: &str, help: &str| {
            reg(
                &registry,
                IntCounter::new(name, help).expect("valid metric"),
            )
        };
        let gauge = |name: &str, help: &str| {
            reg(&registry, IntGauge::new(name, help).expect("valid metric"))
        };
        let errors = reg(
            &registry,
            IntCounterVec::new(
                Opts::new(STREAM_ERRORS, "DoGet streams ended by an error."),
                &["code"],
            )
            .expect("valid metric"),
        );
        // Present at 0 from the start, so dashboards and alerts see the series before any error.
        for code in [
            tonic::Code::InvalidArgument,
            tonic::Code::NotFound,
            tonic::Code::PermissionDenied,
            tonic::Code::DeadlineExceeded,
            tonic::Code::Unimplemented,
            tonic::Code::FailedPrecondition,
            tonic::Code::Unauthenticated,
            tonic::Code::Unavailable,
            tonic::Code::ResourceExhausted,
            tonic::Code::OutOfRange,
            tonic::Code::Internal,
        ] {
            errors.with_label_values(&[protocol::code_name(code)]);
        }
        Metrics {
            rows: counter(ROWS_STREAMED, "Rows sent in DoGet streams."),
            bytes: counter(BYTES_STREAMED, "Arrow IPC bytes sent in DoGet streams."),
            chunks: counter(CHUNKS_STREAMED, "Endpoints read to their end."),
            errors,
            active_streams: gauge(ACTIVE_STREAMS, "DoGet streams open now."),
            active_scans: gauge(ACTIVE_SCANS, "Scans running now (max_concurrent_chunks)."),
            memory_reserved: gauge(MEMORY_RESERVED, "Bytes of decoded batches buffered now."),
            cache_hits: counter(CACHE_HITS, "Discovery served from the cache."),
            cache_misses: counter(CACHE_MISSES, "Discovery run against the database."),
            discovery_fallbacks: counter(
                DISCOVERY_FALLBACKS,
                "Discoveries that served hypertables as plain tables because TimescaleDB's catalog could not be read.",
            ),
            memory_waits: counter(MEMORY_WAITS, "Batches that waited for room in the memory budget."),
            chunk_seconds: reg(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(CHUNK_SECONDS, "Seconds from scan start to last batch.")
                        .buckets(vec![
                            0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                        ]),
                )
                .expect("valid metric"),
            ),
            registry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding of gathered metrics cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    /// The same figures as JSON, for `DoAction stats`.
    pub fn json(&self) -> serde_json::Value {
        use prometheus::core::Collector;
        let errors: serde_json::Map<String, serde_json::Value> = Collector::collect(&self.errors)
            .iter()
            .flat_map(|family| family.get_metric())
            .map(|m| {
                let code = m
                    .get_label()
                    .first()
                    .map(|l| l.value().to_string())
                    .unwrap_or_default();
                (code, json!(m.get_counter().get_value() as u64))
            })
            .collect();
        json!({
            "rows_streamed": self.rows.get(),
            "bytes_streamed": self.bytes.get(),
            "chunks_streamed": self.chunks.get(),
            "stream_errors": errors,
            "active_streams": self.active_streams.get(),
            "active_scans": self.active_scans.get(),
            "memory_reserved_bytes": self.memory_reserved.get(),
            "discovery_cache_hits": self.cache_hits.get(),
            "discovery_cache_misses": self.cache_misses.get(),
            "discovery_fallbacks": self.discovery_fallbacks.get(),
            "memory_reservation_waits_total": self.memory_waits.get(),
            "chunk_stream_seconds_count": self.chunk_seconds.get_sample_count(),
            "chunk_stream_seconds_sum": self.chunk_seconds.get_sample_sum(),
        })
    }
}

/// The server-wide byte budget for decoded batches waiting to be sent (`max_memory_mb`). A scan
/// reserves a batch's size before handing it on and waits while the budget is spent, so many slow
/// clients slow their scans down instead of growing the server.
pub struct MemoryBudget {
    kib: Arc<Semaphore>,
    total_kib: u32,
    metrics: Arc<Metrics>,
}

/// Budget held by one buffered batch; returned when dropped.
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
    bytes: i64,
    metrics: Arc<Metrics>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.metrics.memory_reserved.sub(self.bytes);
    }
}

impl MemoryBudget {
    /// A budget of `bytes` (counted in KiB).
    pub fn new(bytes: u64, metrics: Arc<Metrics>) -> Self {
        let total_kib = (bytes / 1024).clamp(1, u64::from(u32::MAX >> 4)) as u32;
        MemoryBudget {
            kib: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
            metrics,
        }
    }

    /// Waits until `bytes` fit in the budget and reserves them. A batch larger than the whole budget
    /// waits for all of it, so it still goes through, alone. `None` once the budget is closed.
    pub async fn reserve(&self, bytes: usize) -> Option<Reservation> {
        let kib = (bytes.div_ceil(1024) as u64).clamp(1, u64::from(self.total_kib)) as u32;
        let permit = match self.kib.clone().try_acquire_many_owned(kib) {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::Closed) => return None,
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                self.metrics.memory_waits.inc();
                self.kib.clone().acquire_many_owned(kib).await.ok()?
            }
        };
        let bytes = i64::from(kib) * 1024;
        self.metrics.memory_reserved.add(bytes);
        Some(Reservation {
            _permit: permit,
            bytes,
            metrics: self.metrics.clone(),
        })
    }
}

/// Serves `GET /metrics` (Prometheus text) on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(respond(&req, &metrics)) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(error = %e, "metrics connection ended");
            }
        });
    }
}

fn respond(req: &Request<hyper::body::Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method().as_str(), req.uri().path()) {
        ("GET", "/metrics") => (200, "text/plain; version=0.0.4", metrics.render()),
        (_, "/metrics") => (405, "text/plain", "use GET\n".to_string()),
        _ => (404, "text/plain", "see /metrics\n".to_string()),
    };
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

/// Binds the metrics listener, if one is configured.
pub async fn bind(addr: Option<SocketAddr>) -> std::io::Result<Option<TcpListener>> {
    match addr {
        Some(a) => TcpListener::bind(a).await.map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_names_every_metric() {
        let m = Metrics::new();
        assert!(
            m.render()
                .contains("hyperflight_stream_errors_total{code=\"NOT_FOUND\"} 0"),
            "error series exist before the first error"
        );
        m.rows.inc_by(5);
        m.errors
            .with_label_values(&[protocol::code_name(tonic::Code::Unavailable)])
            .inc();
        m.chunk_seconds.observe(0.2);
        let text = m.render();
        for name in [
            ROWS_STREAMED,
            BYTES_STREAMED,
            CHUNKS_STREAMED,
            STREAM_ERRORS,
            ACTIVE_STREAMS,
            ACTIVE_SCANS,
            MEMORY_RESERVED,
            CACHE_HITS,
            CACHE_MISSES,
            CHUNK_SECONDS,
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
        }
        assert!(text.contains("hyperflight_rows_streamed_total 5"));
        assert!(text.contains("hyperflight_stream_errors_total{code=\"UNAVAILABLE\"} 1"));
        assert_eq!(m.json()["stream_errors"]["UNAVAILABLE"], 1);
    }

    #[tokio::test]
    async fn budget_waits_until_bytes_are_returned() {
        let metrics = Arc::new(Metrics::new());
        let budget = MemoryBudget::new(10 * 1024, metrics.clone());
        let a = budget.reserve(8 * 1024).await.unwrap();
        assert_eq!(metrics.memory_reserved.get(), 8 * 1024);
        let waiting =
            tokio::time::timeout(Duration::from_millis(50), budget.reserve(4 * 1024)).await;
        assert!(waiting.is_err(), "over budget must wait");
        drop(a);
        assert_eq!(metrics.memory_reserved.get(), 0);
        let big = budget.reserve(1 << 30).await.unwrap();
        assert_eq!(
            metrics.memory_reserved.get(),
            10 * 1024,
            "capped at the whole budget"
        );
        drop(big);
    }
}
