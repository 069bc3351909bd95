//! Metrics in the Prometheus text format (`prometheus-client`), and the health endpoints,
//! served on their own port (`--metrics-listen`, off by default):
//!
//! - `GET /metrics`: the registry below.
//! - `GET /healthz`: 200 while the process serves.
//! - `GET /readyz`: 200 only while the deployment's keys are unwrapped and storage answers;
//!   503 with a one-line reason otherwise.
//!
//! No label carries a user name, a secret name or an address: labels are operation names,
//! outcome codes, transports and build facts, all from fixed sets.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use tokio_util::sync::CancellationToken;

use crate::storage::Storage;

/// An operation and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// The operation or request kind.
    pub op: &'static str,
    /// `ok`, `recorded`, or the error code's name.
    pub outcome: &'static str,
}

/// An operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Op {
    /// Its name.
    pub op: &'static str,
}

/// A login event.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Login {
    /// `started`, `succeeded`, `failed` or `locked`.
    pub event: &'static str,
}

/// A transport.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Transport {
    /// `quic` or `tcp`.
    pub transport: &'static str,
}

/// The build.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Build {
    version: &'static str,
    protocol: &'static str,
    storage: &'static str,
    key_provider: &'static str,
}

/// The protocol's ALPN id, as text.
fn protocol_name() -> &'static str {
    std::str::from_utf8(keyserver_protocol::ALPN).unwrap_or("keyserver")
}

type Histograms = Family<Op, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 50 µs to about 1.6 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

fn batch_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 10))
}

fn commit_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// Every metric the server keeps.
pub struct Metrics {
    registry: Registry,
    /// Requests (before a session: handshakes; `sealed` for operations) by outcome.
    pub requests: Family<Outcome, Counter>,
    /// Operations in a session by outcome.
    pub operations: Family<Outcome, Counter>,
    /// Operation latency, server side.
    pub operation_seconds: Histograms,
    /// Login events.
    pub logins: Family<Login, Counter>,
    /// Requests answered `SLOW_DOWN`, by request kind.
    pub rate_limited: Family<Op, Counter>,
    /// Connections open, by transport.
    pub connections: Family<Transport, Gauge>,
    /// Connections accepted, by transport.
    pub connections_accepted: Family<Transport, Counter>,
    /// Storage commits' latency (SQLite: one per batch).
    pub commit_seconds: Histogram,
    /// Jobs per storage commit (SQLite's group commit).
    pub commit_batch_size: Histogram,
    sessions: Gauge,
    handshakes: Gauge,
    pool_in_use: Family<Op, Gauge>,
    pool_size: Family<Op, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// A registry with every metric, and the build-info gauge for `storage` and
    /// `key_provider`.
    pub fn new(storage: &'static str, key_provider: &'static str) -> Self {
        let mut registry = Registry::with_prefix("keyserver");
        let requests = Family::<Outcome, Counter>::default();
        registry.register(
            "requests",
            "Requests by kind and outcome (sealed: an operation in a session)",
            requests.clone(),
        );
        let operations = Family::<Outcome, Counter>::default();
        registry.register(
            "operations",
            "Operations in a session by name and outcome",
            operations.clone(),
        );
        let operation_seconds: Histograms = Family::new_with_constructor(latency_histogram);
        registry.register(
            "operation_seconds",
            "Server time of an operation, storage included",
            operation_seconds.clone(),
        );
        let logins = Family::<Login, Counter>::default();
        registry.register(
            "logins",
            "Logins started, succeeded, failed (a wrong password: a bad finish or an abort) and refused as locked",
            logins.clone(),
        );
        let rate_limited = Family::<Op, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests answered SLOW_DOWN, by request kind",
            rate_limited.clone(),
        );
        let connections = Family::<Transport, Gauge>::default();
        registry.register(
            "connections_open",
            "Connections open, by transport",
            connections.clone(),
        );
        let connections_accepted = Family::<Transport, Counter>::default();
        registry.register(
            "connections_accepted",
            "Connections accepted, by transport",
            connections_accepted.clone(),
        );
        let commit_seconds = commit_histogram();
        registry.register(
            "storage_commit_seconds",
            "Time of a storage commit (SQLite: a group of jobs, fsync included)",
            commit_seconds.clone(),
        );
        let commit_batch_size = batch_histogram();
        registry.register(
            "storage_commit_jobs",
            "Jobs in one storage commit (SQLite's group commit)",
            commit_batch_size.clone(),
        );
        let sessions = Gauge::default();
        registry.register("sessions_open", "Sessions held in memory", sessions.clone());
        let handshakes = Gauge::default();
        registry.register(
            "handshakes_pending",
            "Registrations and logins started and not finished",
            handshakes.clone(),
        );
        let pool_in_use = Family::<Op, Gauge>::default();
        registry.register(
            "db_pool_in_use",
            "Database connections in use, by pool",
            pool_in_use.clone(),
        );
        let pool_size = Family::<Op, Gauge>::default();
        registry.register(
            "db_pool_size",
            "Database connections open, by pool",
            pool_size.clone(),
        );
        let build = Family::<Build, Gauge>::default();
        build
            .get_or_create(&Build {
                version: env!("CARGO_PKG_VERSION"),
                protocol: protocol_name(),
                storage,
                key_provider,
            })
            .set(1);
        registry.register("build_info", "The build and its settings", build);
        Self {
            registry,
            requests,
            operations,
            operation_seconds,
            logins,
            rate_limited,
            connections,
            connections_accepted,
            commit_seconds,
            commit_batch_size,
            sessions,
            handshakes,
            pool_in_use,
            pool_size,
        }
    }

    /// Counts a connection of `transport` while the guard lives.
    pub fn connection(self: &Arc<Self>, transport: &'static str) -> ConnectionGuard {
        let labels = Transport { transport };
        self.connections_accepted.get_or_create(&labels).inc();
        self.connections.get_or_create(&labels).inc();
        ConnectionGuard {
            metrics: self.clone(),
            labels,
        }
    }

    /// The text exposition, with the gauges read now.
    fn encode(
        &self,
        sessions: usize,
        handshakes: usize,
        pools: &[(&'static str, u32, u32)],
    ) -> String {
        self.sessions
            .set(i64::try_from(sessions).unwrap_or(i64::MAX));
        self.handshakes
            .set(i64::try_from(handshakes).unwrap_or(i64::MAX));
        for (pool, size, idle) in pools {
            let op = Op { op: pool };
            self.pool_size.get_or_create(&op).set(i64::from(*size));
            self.pool_in_use
                .get_or_create(&op)
                .set(i64::from(size.saturating_sub(*idle)));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Keeps a connection counted as open.
pub struct ConnectionGuard {
    metrics: Arc<Metrics>,
    labels: Transport,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.metrics.connections.get_or_create(&self.labels).dec();
    }
}

/// What `/readyz` and `/metrics` read: set once the server's parts exist.
#[derive(Default)]
pub struct Readiness {
    keys_unwrapped: AtomicBool,
    /// Sessions open and handshakes pending, read at each scrape.
    counts: OnceLock<Counts>,
    storage: OnceLock<Storage>,
}

type Counts = Box<dyn Fn() -> (usize, usize) + Send + Sync>;

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field(
                "keys_unwrapped",
                &self.keys_unwrapped.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

impl Readiness {
    /// Notes that storage is open.
    pub fn storage_open(&self, storage: Storage) {
        let _ = self.storage.set(storage);
    }

    /// Notes that the keys are unwrapped and the server serves; `counts` gives its sessions
    /// open and handshakes pending.
    pub fn serving(&self, counts: impl Fn() -> (usize, usize) + Send + Sync + 'static) {
        let _ = self.counts.set(Box::new(counts));
        self.keys_unwrapped.store(true, Ordering::Release);
    }

    /// Why the server is not ready, if it is not.
    async fn not_ready(&self) -> Option<String> {
        if !self.keys_unwrapped.load(Ordering::Acquire) {
            return Some("the deployment's keys are not unwrapped yet".into());
        }
        let storage = self.storage.get()?.clone();
        let probe = storage.read(|tx| Box::pin(async move { tx.has_accounts().await }));
        match tokio::time::timeout(Duration::from_secs(2), probe).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(format!("storage: {e}")),
            Err(_) => Some("storage: no answer within 2 s".into()),
        }
    }
}

fn text(status: StatusCode, body: String, kind: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(kind) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

async fn answer(
    req: Request<Incoming>,
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != http::Method::GET {
        return Ok(text(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET only\n".into(),
            PLAIN,
        ));
    }
    Ok(match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into(), PLAIN),
        "/readyz" => match ready.not_ready().await {
            None => text(StatusCode::OK, "ready\n".into(), PLAIN),
            Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"), PLAIN),
        },
        "/metrics" => {
            let (sessions, handshakes) = ready.counts.get().map_or((0, 0), |c| c());
            let pools = ready.storage.get().map(Storage::pools).unwrap_or_default();
            text(
                StatusCode::OK,
                metrics.encode(sessions, handshakes, &pools),
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into(), PLAIN),
    })
}

/// Serves the endpoints on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (metrics, ready, shutdown) = (metrics.clone(), ready.clone(), shutdown.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, metrics.clone(), ready.clone()));
            let conn = hyper::server::conn::http1::Builder::new()
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            // A scrape is short: a connection idle for 30 s, or open at shutdown, goes.
            tokio::select! {
                _ = conn => {}
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
        });
    }
}
