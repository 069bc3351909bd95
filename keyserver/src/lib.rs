//! The keyserver: a thin I/O shell around `keyserver-protocol`.
//!
//! ```text
//! transport (quic, tcp) ── bytes ──▶ service::Core::handle ──▶ storage::Storage
//!                                     (handshakes, sessions,      (one job = one
//!                                      operations; clock read     transaction, over
//!                                      once per request)           sqlite or postgres)
//! ```
//!
//! - [`config`]: validated settings, from defaults, the data dir's file and flags.
//! - [`data_dir`], [`pki`], [`files`]: the data dir, made on first start.
//! - [`keys`]: the deployment's own secrets under envelope encryption: data keys wrapped
//!   by a key file ([`server_setup`]) or a KMS key ([`kms`]), unwrapped once at start.
//! - [`transport`]: QUIC (quinn) and TLS 1.3 over TCP, carrying envelopes to the service.
//! - [`service`]: the protocol service: admission, registration, login, sessions, sealed
//!   requests and one module per operation.
//! - [`storage`]: the storage contract (row primitives in one transaction) and its two
//!   backends; [`audit`] and [`guess_limit`] are rules written once above it.
//! - [`clock`]: the one clock, read once per request.
//!
//! [`Server::start`] binds and serves; [`Server::shutdown`] stops accepting, finishes the
//! requests in flight and returns.

pub mod attestation;
pub mod audit;
pub mod backup;
pub mod cli;
pub mod clock;
pub mod config;
pub mod data_dir;
pub mod files;
pub mod guess_limit;
pub mod held_keys;
pub mod keys;
pub mod kms;
pub mod metrics;
pub mod pki;
pub mod relay;
pub mod server_setup;
pub mod service;
pub mod storage;
pub mod transport;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::info;

use crate::{
    clock::{Clock, SystemClock},
    config::{Config, ConfigError},
    files::FileError,
    keys::{
        KeyError,
        deployment::{self, Kek, Legacy},
    },
    server_setup::SetupKeySource,
    service::Core,
    storage::{Backend, Storage, StorageError, postgres::PostgresBackend, sqlite::SqliteBackend},
    transport::tls::TlsConfigError,
};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data dir could not be made or read.
    #[error(transparent)]
    DataDir(#[from] FileError),
    /// The database could not be opened.
    #[error("cannot open the database: {0}")]
    Storage(#[from] StorageError),
    /// The certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The Postgres database could not be reached or migrated.
    #[error("cannot use the database at {0}: {1}")]
    Database(String, StorageError),
    /// A database URL was given but this build has no backend for it.
    #[error("unsupported database URL (expected postgres://…): {0}")]
    UnsupportedDatabase(String),
    /// The deployment's keys could not be unwrapped (or made).
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The relay's socket (vsock or Unix) could not be listened on.
    #[error("cannot listen for the host's relay on {endpoint}: {source}")]
    Relay {
        /// The vsock port or Unix socket.
        endpoint: String,
        /// Why.
        source: std::io::Error,
    },
    /// The security module named by `attestation` cannot be used.
    #[error(transparent)]
    Attestation(#[from] attestation::ModuleError),
    /// Another server runs on this data dir's SQLite database.
    #[error("another keyserver is running on {0} (its {lock} is held)", lock = backup::LOCK_FILE)]
    DataDirInUse(String),
}

/// How long unwrapping the deployment's keys may take at start (a KMS that does not
/// answer): past it the server exits rather than start half-way.
pub const UNWRAP_TIMEOUT: Duration = Duration::from_secs(25);

/// Opens the storage `config` names (the SQLite database in `data_dir` by default).
pub async fn open_storage(
    data_dir: &std::path::Path,
    config: &Config,
) -> Result<Storage, StartError> {
    let backend: Arc<dyn Backend> = match &config.database_url {
        None => Arc::new(SqliteBackend::open(&data_dir.join("keyserver.db")).await?),
        Some(url)
            if url.expose().starts_with("postgres://")
                || url.expose().starts_with("postgresql://") =>
        {
            let connected = match (&config.vsock, &config.host_calls) {
                // Inside an enclave there is no network: through the host.
                (Some(_), Some(host)) => {
                    let opts: sqlx::postgres::PgConnectOptions =
                        url.expose().parse().map_err(|e| {
                            StartError::Database(
                                url.redacted(),
                                StorageError::Unavailable(format!("invalid database URL: {e}")),
                            )
                        })?;
                    let dir = relay::database::through_host(
                        host.clone(),
                        &data_dir.join("database-relay"),
                    )
                    .map_err(|e| {
                        StartError::Database(
                            url.redacted(),
                            StorageError::Unavailable(format!(
                                "cannot open the socket that leads to the host: {e}"
                            )),
                        )
                    })?;
                    PostgresBackend::connect_with(
                        opts.socket(dir).port(relay::database::SOCKET_PORT),
                    )
                    .await
                }
                _ => PostgresBackend::connect(url.expose()).await,
            };
            Arc::new(connected.map_err(|e| StartError::Database(url.redacted(), e))?)
        }
        Some(url) => return Err(StartError::UnsupportedDatabase(url.redacted())),
    };
    Ok(Storage::new(backend))
}

/// Opens (or makes, for a new deployment) the keyring in `storage` with the key provider
/// `config` names, within [`UNWRAP_TIMEOUT`]. `key` is the key file's source (the `file`
/// provider's key, and the key of a data dir made before keyrings).
pub async fn unwrap_keys(
    storage: &Storage,
    data_dir: &std::path::Path,
    config: &Config,
    key: SetupKeySource,
    module: Option<Arc<dyn attestation::SecurityModule>>,
) -> Result<deployment::Opened, StartError> {
    let kek = Kek::from_settings(&config.keys, key.clone())
        .attested_by(module, config.host_calls.clone());
    let legacy = Legacy {
        data_dir: data_dir.to_path_buf(),
        key,
    };
    let opened = tokio::time::timeout(
        UNWRAP_TIMEOUT,
        deployment::open_or_create(storage, &kek, Some(&legacy)),
    )
    .await
    .map_err(|_| KeyError::Timeout {
        kek: kek.describe(),
        secs: UNWRAP_TIMEOUT.as_secs(),
    })??;
    info!(kek = %opened.keyring.kek, made = ?opened.made, "the deployment's keys are unwrapped");
    Ok(opened)
}

/// The server's TLS certificate and key, and what answers attestation requests: the data
/// dir's certificate without a security module; with one, a key made now in memory, which
/// the module's documents name.
#[allow(clippy::type_complexity)]
fn tls_identity(
    data_dir: &std::path::Path,
    module: Option<Arc<dyn attestation::SecurityModule>>,
) -> Result<
    (
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
        Option<Arc<attestation::Attester>>,
    ),
    StartError,
> {
    let Some(module) = module else {
        let (certs, key) = pki::load_server_identity(data_dir)?;
        return Ok((certs, key, None));
    };
    let identity = attestation::TlsIdentity::generate()?;
    info!("attested: the TLS key was made in memory now; documents name it");
    let attester = attestation::Attester::new(module, identity.spki);
    Ok((identity.certs, identity.key, Some(Arc::new(attester))))
}

/// The web listener's TLS configuration: its own certificate if configured, else the
/// server's.
fn web_tls(
    config: &Config,
    certs: &[rustls::pki_types::CertificateDer<'static>],
    key: &rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig, StartError> {
    let (certs, key) = match (&config.web_cert_file, &config.web_key_file) {
        (Some(cert), Some(key)) => pki::load_identity(cert, key)?,
        _ => {
            tracing::warn!(
                "the web listener serves the server's own certificate: browsers will not \
                 trust it; set web_cert_file and web_key_file"
            );
            (certs.to_vec(), key.clone_key())
        }
    };
    Ok(transport::web::server_config(certs, key)?)
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    quic: quinn::Endpoint,
    connections: Arc<transport::limits::ConnectionLimits>,
    quic_addr: SocketAddr,
    tcp_addr: SocketAddr,
    /// The web listener's address, if serving browsers.
    web_addr: Option<SocketAddr>,
    killer: Arc<transport::ConnectionKiller>,
    core: Arc<Core>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// The data dir's lock, held while serving its SQLite database.
    _lock: Option<std::fs::File>,
    metrics_addr: Option<SocketAddr>,
    /// Where the host's relay reaches this server, when it serves inside an enclave.
    relay: Option<relay::Endpoint>,
}

/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

impl Server {
    /// Creates the data dir if needed, opens storage, binds and starts serving. The setup
    /// key is where `config` says, or next to the data dir.
    pub async fn start(data_dir: PathBuf, config: Config) -> Result<Self, StartError> {
        let key = match &config.setup_key_file {
            Some(f) => SetupKeySource::File(f.clone()),
            None => SetupKeySource::default_for(&data_dir),
        };
        Self::start_with(data_dir, config, key, Arc::new(SystemClock::default())).await
    }

    /// [`Self::start`] with the setup key from `key` and time from `clock` (tests move it).
    pub async fn start_with(
        data_dir: PathBuf,
        config: Config,
        key: SetupKeySource,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartError> {
        config.validate()?;
        // The metrics port serves first, so that /readyz can say what start-up waits for.
        let shutdown = CancellationToken::new();
        let stop_on_error = shutdown.clone().drop_guard();
        let storage_kind = if config.database_url.is_some() {
            "postgres"
        } else {
            "sqlite"
        };
        let metrics = Arc::new(metrics::Metrics::new(
            storage_kind,
            config.keys.provider.as_str(),
        ));
        let ready = Arc::new(metrics::Readiness::default());
        let metrics_addr = match config.metrics_listen {
            Some(addr) => {
                let bind_err = |source| StartError::Bind { addr, source };
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(bind_err)?;
                let bound = l.local_addr().map_err(bind_err)?;
                tokio::spawn(metrics::serve(
                    l,
                    metrics.clone(),
                    ready.clone(),
                    shutdown.clone(),
                ));
                Some(bound)
            }
            None => None,
        };
        data_dir::init(&data_dir, &config::template_with(&config.keys))?;
        if config.keys.provider == config::Provider::File && key.is_inside(&data_dir) {
            tracing::warn!(
                key = %key.describe(),
                "the key file is inside the data dir: a copy of the data dir (a backup) is \
                 enough to guess passwords offline; move it out and set setup_key_file"
            );
        }
        let lock = match config.database_url {
            None => Some(
                backup::lock(&data_dir)?
                    .ok_or_else(|| StartError::DataDirInUse(data_dir.display().to_string()))?,
            ),
            Some(_) => None,
        };
        let storage = open_storage(&data_dir, &config).await?;
        let observed = metrics.clone();
        storage.observe_commits(storage::CommitObserver(Arc::new(move |took, jobs| {
            observed.commit_seconds.observe(took.as_secs_f64());
            observed.commit_batch_size.observe(jobs as f64);
        })));
        ready.storage_open(storage.clone());
        let module = attestation::open(config.attestation, &data_dir)?;
        let deployment::Opened { unwrapped, .. } =
            unwrap_keys(&storage, &data_dir, &config, key, module.clone()).await?;
        let (certs, key, attester) = tls_identity(&data_dir, module)?;
        let web = match config.web_listen {
            Some(addr) => {
                let tls = web_tls(&config, &certs, &key)?;
                let bind_err = |source| StartError::Bind { addr, source };
                let listener = transport::tcp::bind(addr).await.map_err(bind_err)?;
                let bound = listener.local_addr().map_err(bind_err)?;
                Some((listener, bound, tls))
            }
            None => None,
        };
        let tls = transport::tls::server_config(certs, key)?;
        let listeners = Listeners::bind(&config, &tls).await?;
        let (quic, quic_addr, tcp_addr) = (
            listeners.quic.clone(),
            listeners.quic_addr,
            listeners.tcp_addr,
        );
        let usize_of = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        let connections = transport::limits::ConnectionLimits::new(
            usize_of(config.max_connections),
            usize_of(config.max_connections_per_address),
            transport::limits::ByteLimits {
                connection: usize_of(config.max_buffered_bytes_per_connection),
                address: usize_of(config.max_buffered_bytes_per_address),
                total: usize_of(config.max_buffered_bytes),
            },
        );
        let tcp_limits = transport::tcp::TcpLimits {
            connections: connections.clone(),
            max_in_flight: usize::try_from(config.max_streams_per_connection).unwrap_or(usize::MAX),
            idle_timeout: Duration::from_secs(config.connection_idle_timeout_secs),
        };
        let web_limits = transport::web::WebLimits {
            connections: connections.clone(),
            max_in_flight: tcp_limits.max_in_flight,
            idle_timeout: tcp_limits.idle_timeout,
            origins: config.web_origins.clone().into(),
        };
        let mut core = Core::new(config, storage, unwrapped.setup, unwrapped.keys, clock)
            .with_metrics(metrics);
        if let Some(a) = attester {
            core = core.with_attester(a);
        }
        let core = Arc::new(core);
        let counted = core.clone();
        ready.serving(move || (counted.open_sessions(), counted.pending_handshakes()));
        let tasks = TaskTracker::new();
        let killer = Arc::new(transport::ConnectionKiller::default());
        tokio::spawn(transport::quic::serve(
            quic.clone(),
            core.clone(),
            connections.clone(),
            shutdown.clone(),
            killer.clone(),
            tasks.clone(),
        ));
        let tcp_context = transport::tcp::Context::new(
            Arc::new(tls),
            core.clone(),
            tcp_limits,
            shutdown.clone(),
            killer.clone(),
            tasks.clone(),
        );
        let relay = listeners
            .relay
            .as_ref()
            .map(|(endpoint, _)| endpoint.clone());
        match listeners.streams {
            Streams::Tcp(tcp) => {
                tokio::spawn(transport::tcp::serve_with(
                    tcp,
                    tcp_context,
                    shutdown.clone(),
                ));
            }
            Streams::Relay(listener) => {
                let udp = listeners
                    .relay
                    .map(|(_, udp)| udp)
                    .ok_or_else(|| StartError::Tls(TlsConfigError("no relayed socket".into())))?;
                tokio::spawn(transport::relayed::serve(
                    listener,
                    tcp_context,
                    udp,
                    shutdown.clone(),
                ));
            }
        }
        let web_addr = web.map(|(listener, bound, tls)| {
            let ctx = transport::web::Context::new(
                Arc::new(tls),
                core.clone(),
                web_limits,
                shutdown.clone(),
                killer.clone(),
                tasks.clone(),
            );
            tokio::spawn(transport::web::serve(listener, ctx));
            info!(web = %bound, "serving browsers");
            bound
        });
        tokio::spawn(sweeper(core.clone(), shutdown.clone()));
        match &relay {
            Some(r) => info!(relay = %r.describe(), "serving through the host's relay"),
            None => info!(quic = %quic_addr, tcp = %tcp_addr, "serving"),
        }
        stop_on_error.disarm();
        Ok(Self {
            quic,
            connections,
            quic_addr,
            tcp_addr,
            web_addr,
            killer,
            core,
            shutdown,
            tasks,
            _lock: lock,
            metrics_addr,
            relay,
        })
    }

    /// The QUIC address actually bound (useful with port 0).
    pub fn quic_addr(&self) -> SocketAddr {
        self.quic_addr
    }

    /// The TLS-over-TCP address actually bound (same port number as QUIC).
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// The line printed once the server accepts connections.
    pub fn listening_line(&self) -> String {
        let metrics = self
            .metrics_addr
            .map_or_else(String::new, |a| format!(" metrics={a}"));
        let web = self
            .web_addr
            .map_or_else(String::new, |a| format!(" web={a}"));
        match &self.relay {
            Some(r) => format!("keyserver listening vsock={}{metrics}", r.describe()),
            None => format!(
                "keyserver listening quic={} tcp={}{web}{metrics}",
                self.quic_addr, self.tcp_addr
            ),
        }
    }

    /// The web listener's address actually bound, if serving browsers.
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web_addr
    }

    /// The metrics and health address actually bound, if serving them.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Closes every open connection now, as a network failure would; sessions stay open
    /// and clients resume them on new connections. For tests and for operators moving
    /// clients off an instance.
    pub fn drop_connections(&self) {
        self.killer.kill_all();
    }

    /// Connections open now (both transports), and how many QUIC connections were asked
    /// to prove their source address (a Retry) since start.
    pub fn connections(&self) -> (usize, u64) {
        (
            self.connections.open(),
            self.connections.address_validations(),
        )
    }

    /// The protocol core (for tests and benchmarks in this crate).
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// Stops accepting, waits for requests in flight (at most 30 s), closes connections.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("requests still in flight after {DRAIN_TIMEOUT:?}; closing anyway");
        }
        self.quic
            .close(quinn::VarInt::from_u32(0), b"shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.quic.wait_idle()).await;
    }
}

/// Where connections come from: TCP and UDP sockets, or the host's relay.
enum Streams {
    Tcp(tokio::net::TcpListener),
    Relay(relay::Listener),
}

/// The server's listening sockets.
struct Listeners {
    quic: quinn::Endpoint,
    quic_addr: SocketAddr,
    tcp_addr: SocketAddr,
    streams: Streams,
    /// With a relay: where it reaches the server, and the socket quinn's datagrams travel
    /// through.
    relay: Option<(relay::Endpoint, Arc<transport::relayed::RelayedUdp>)>,
}

impl Listeners {
    async fn bind(config: &Config, tls: &rustls::ServerConfig) -> Result<Self, StartError> {
        let Some(endpoint) = &config.vsock else {
            let (quic, tcp) = bind_both(config.listen, tls, config).await?;
            let bind_err = |source| StartError::Bind {
                addr: config.listen,
                source,
            };
            return Ok(Self {
                quic_addr: quic.local_addr().map_err(bind_err)?,
                tcp_addr: tcp.local_addr().map_err(bind_err)?,
                quic,
                streams: Streams::Tcp(tcp),
                relay: None,
            });
        };
        let relay_err = |source| StartError::Relay {
            endpoint: endpoint.describe(),
            source,
        };
        let udp = transport::relayed::RelayedUdp::new();
        let quic = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            Some(transport::quic::server_config(tls.clone(), config)?),
            udp.clone(),
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(relay_err)?;
        let listener = endpoint.listen().map_err(relay_err)?;
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        Ok(Self {
            quic,
            quic_addr: unspecified,
            tcp_addr: unspecified,
            streams: Streams::Relay(listener),
            relay: Some((endpoint.clone(), udp)),
        })
    }
}

/// Binds QUIC and TCP on the same port number (UDP and TCP ports do not collide). With port
/// 0 the port is QUIC's pick; if TCP cannot have it, try again with another.
async fn bind_both(
    listen: SocketAddr,
    tls: &rustls::ServerConfig,
    config: &Config,
) -> Result<(quinn::Endpoint, tokio::net::TcpListener), StartError> {
    let bind_err = |source| StartError::Bind {
        addr: listen,
        source,
    };
    let attempts = if listen.port() == 0 { 20 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let quic =
            transport::quic::bind(listen, transport::quic::server_config(tls.clone(), config)?)
                .map_err(bind_err)?;
        let port = quic.local_addr().map_err(bind_err)?.port();
        match transport::tcp::bind(SocketAddr::new(listen.ip(), port)).await {
            Ok(tcp) => return Ok((quic, tcp)),
            Err(e) => {
                quic.close(quinn::VarInt::from_u32(0), b"");
                last = Some(e);
            }
        }
    }
    Err(bind_err(
        last.unwrap_or_else(|| std::io::Error::other("no port")),
    ))
}

/// Drops expired handshakes and sessions from memory every 5 s, and purges storage once a
/// minute (those are database writes: no reason to pay them every few seconds).
async fn sweeper(core: Arc<Core>, shutdown: CancellationToken) {
    let mut sweep = tokio::time::interval(Duration::from_secs(5));
    let mut purge = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = sweep.tick() => core.sweep().await,
            _ = purge.tick() => core.purge().await,
        }
    }
}
