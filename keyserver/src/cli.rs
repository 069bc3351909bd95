//! The `keyserver` command line.

use std::{io::Write, net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand};

use crate::{
    Server, StartError,
    config::{self, Config, KeySettings, Provider},
    data_dir,
    keys::deployment::{self, Kek, Made},
    server_setup::{self, SetupKeySource},
};

/// A key server: OPAQUE login, client-sealed secrets, a hash-chained audit log.
#[derive(Debug, Parser)]
#[command(name = "keyserver", version, about)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The data dir: created on first start with a development PKI, a commented config
    /// file and the SQLite database (which holds the deployment's wrapped keys).
    #[arg(
        long,
        global = true,
        env = "KEYSERVER_DATA_DIR",
        default_value = "./keyserver-data"
    )]
    pub data_dir: PathBuf,
    /// Address to listen on; port 0 picks a free port [default: 127.0.0.1:7443]
    #[arg(long, global = true, env = "KEYSERVER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Postgres URL (default: the embedded SQLite database in the data dir).
    #[arg(
        long,
        global = true,
        env = "KEYSERVER_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// With the file key provider: the file holding the key that wraps the server's keys
    /// [default: setup_key_file in keyserver.toml, else <data dir>.setup.key, next to the
    /// data dir]. The KEYSERVER_SETUP_KEY environment variable (the key itself, 64 hex
    /// digits, for secret managers) overrides it.
    #[arg(long, global = true, env = "KEYSERVER_SETUP_KEY_FILE")]
    pub setup_key: Option<PathBuf>,
    /// The AWS KMS key that wraps the server's keys (ARN, key id or alias): selects the
    /// aws-kms provider [default: kms_key_id in [keys] of keyserver.toml]. For rotate-kek:
    /// the new key.
    #[arg(long, global = true, env = "KEYSERVER_KMS_KEY_ID")]
    pub kms_key_id: Option<String>,
    /// Which key provider wraps a new deployment's keys: file, aws-kms or nitro-kms (from
    /// inside an enclave) [default: provider in [keys] of keyserver.toml; aws-kms with
    /// --kms-key-id; else file].
    #[arg(long, global = true, env = "KEYSERVER_KEY_PROVIDER")]
    pub key_provider: Option<Provider>,
    /// The KMS key's region [default: the key ARN's, else AWS_REGION].
    #[arg(long, global = true, env = "KEYSERVER_KMS_REGION")]
    pub kms_region: Option<String>,
    /// The KMS endpoint, for VPC endpoints and emulators (https://host[:port]).
    #[arg(long, global = true, env = "KEYSERVER_KMS_ENDPOINT")]
    pub kms_endpoint: Option<String>,
    /// Serve /metrics, /healthz and /readyz over HTTP on this address [default:
    /// metrics_listen in keyserver.toml, else off].
    #[arg(long, global = true, env = "KEYSERVER_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Serve WebSocket over TLS for browsers (wss://HOST:PORT/v1) on this address [default:
    /// web_listen in keyserver.toml, else off]. Needs --web-origin.
    #[arg(long, global = true, env = "KEYSERVER_WEB_LISTEN")]
    pub web_listen: Option<SocketAddr>,
    /// A page allowed to use the web listener, exactly as browsers send its Origin
    /// (https://app.example[:port]); repeat for more [default: web_origins in
    /// keyserver.toml].
    #[arg(
        long = "web-origin",
        global = true,
        env = "KEYSERVER_WEB_ORIGINS",
        value_delimiter = ','
    )]
    pub web_origins: Vec<String>,
    /// The web listener's certificate chain (PEM), one browsers trust [default:
    /// web_cert_file in keyserver.toml, else the server's own certificate].
    #[arg(long, global = true, env = "KEYSERVER_WEB_CERT", requires = "web_key")]
    pub web_cert: Option<PathBuf>,
    /// The private key (PEM) of --web-cert.
    #[arg(long, global = true, env = "KEYSERVER_WEB_KEY", requires = "web_cert")]
    pub web_key: Option<PathBuf>,
    /// The log's format on stderr: text (colours only on a terminal) or json (one object per
    /// line). KEYSERVER_LOG sets the level (default info).
    #[arg(
        long,
        global = true,
        env = "KEYSERVER_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// The security module that vouches for this server: nsm (inside a Nitro enclave),
    /// simulated (development; see `init --simulated-attestation`) or off [default:
    /// attestation in keyserver.toml, else off].
    #[arg(long, global = true, env = "KEYSERVER_ATTESTATION")]
    pub attestation: Option<crate::attestation::Mode>,
    /// Serve inside a Nitro enclave: listen for `keyserver host` on this vsock port (any
    /// context id), or on a Unix socket (`unix:PATH`) where there is no vsock, instead of on
    /// UDP and TCP. On a vsock port, --attestation defaults to nsm.
    #[arg(long, global = true, env = "KEYSERVER_VSOCK")]
    pub vsock: Option<crate::relay::Endpoint>,
    /// Inside an enclave: where `keyserver host` takes this server's calls to KMS and lends
    /// it AWS credentials (CID:PORT, or unix:PATH) [default with a vsock port: 3:8000, the
    /// parent instance].
    #[arg(long, global = true, env = "KEYSERVER_HOST_CALLS")]
    pub host_calls: Option<crate::relay::Endpoint>,
}

/// How the log is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people; colour codes only when stderr is a terminal.
    Text,
    /// One JSON object per line (time, level, message, fields, spans).
    Json,
}

/// Starts the log on stderr in `format`.
pub fn init_log(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("KEYSERVER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve (the default).
    Serve,
    /// Create the data dir and the deployment's keys, and exit.
    Init {
        /// Also make a simulated security module (a test root, its key and the PCRs it
        /// reports, in <data dir>/simulated-attestation/) for `serve --attestation
        /// simulated`. For development and tests: it proves nothing about a machine.
        #[arg(long)]
        simulated_attestation: bool,
    },
    /// Wrap every data key again under another key-encryption key, while servers keep
    /// running (they keep what they unwrapped; their next start uses the new wrapping).
    /// The new key: --kms-key-id, or --to-file. The current one: keyserver.toml's [keys],
    /// or --from-file.
    RotateKek {
        /// Move to the key file (--setup-key, setup_key_file, or next to the data dir; made
        /// if missing).
        #[arg(long, conflicts_with = "from_file")]
        to_file: bool,
        /// Move from the key file (--setup-key, setup_key_file, or next to the data dir) to
        /// --kms-key-id.
        #[arg(long)]
        from_file: bool,
    },
    /// Copy the SQLite database to a new file while the server serves: a consistent
    /// snapshot, synced, mode 0600. It holds no key-encryption key: keep the key file (or
    /// access to the KMS key) apart. A Postgres database is backed up with its own tools.
    Backup {
        /// The new file (never overwritten).
        #[arg(long)]
        to: PathBuf,
    },
    /// Relay clients to a keyserver inside a Nitro enclave (run on the parent instance):
    /// accept QUIC and TLS over TCP on --listen and carry them over vsock. Holds no key and
    /// sees only TLS.
    Host {
        /// Where the enclave listens: CID:PORT (vsock), or unix:PATH.
        #[arg(long, env = "KEYSERVER_ENCLAVE")]
        enclave: crate::relay::Endpoint,
        /// Take the enclave's calls here (a vsock PORT, or unix:PATH): connections to the
        /// KMS endpoint (--kms-endpoint, else AWS's for --kms-region) and the AWS
        /// credentials of this host's environment, lent to the enclave.
        #[arg(long, env = "KEYSERVER_ENCLAVE_CALLS")]
        enclave_calls: Option<crate::relay::Endpoint>,
        /// The Postgres server the enclave's database connections go to (HOST:PORT), when
        /// it serves with --database-url: inside an enclave it reaches the database only
        /// through this host.
        #[arg(long, env = "KEYSERVER_HOST_DATABASE", requires = "enclave_calls")]
        database: Option<String>,
    },
    /// Put a backup in place of the database of a stopped data dir, after checking that it
    /// opens and that this server knows its migrations. The database replaced is kept as
    /// keyserver.db.before-restore.
    Restore {
        /// The backup.
        #[arg(long)]
        from: PathBuf,
    },
}

/// Why the command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Anything else at the top level.
    #[error("{0}")]
    Other(String),
}

/// Where the key file comes from: `KEYSERVER_SETUP_KEY` (the key itself), else
/// `--setup-key`, else `setup_key_file` of `config`, else next to the data dir.
fn setup_key(cli: &Cli, config: Option<&Config>) -> Result<SetupKeySource, CliError> {
    if let Ok(hex) = std::env::var(server_setup::KEY_ENV) {
        return Ok(SetupKeySource::from_hex(&hex).map_err(StartError::from)?);
    }
    Ok(
        match (
            &cli.setup_key,
            config.and_then(|c| c.setup_key_file.as_ref()),
        ) {
            (Some(f), _) | (None, Some(f)) => SetupKeySource::File(f.clone()),
            (None, None) => SetupKeySource::default_for(&cli.data_dir),
        },
    )
}

/// The `[keys]` settings of `file` (if any) with the command line's over them.
fn key_settings(cli: &Cli, file: Option<&Config>) -> KeySettings {
    let mut keys = file.map(|c| c.keys.clone()).unwrap_or_default();
    if let Some(id) = &cli.kms_key_id {
        keys.kms_key_id = Some(id.clone());
        if keys.provider == Provider::File {
            keys.provider = Provider::AwsKms;
        }
    }
    if let Some(p) = cli.key_provider {
        keys.provider = p;
    }
    if let Some(r) = &cli.kms_region {
        keys.kms_region = Some(r.clone());
    }
    if let Some(e) = &cli.kms_endpoint {
        keys.kms_endpoint = Some(e.clone());
    }
    keys
}

/// The data dir's configuration file, if it has one.
fn config_file(cli: &Cli) -> Result<Option<Config>, CliError> {
    let file = cli.data_dir.join("keyserver.toml");
    Ok(file
        .is_file()
        .then(|| Config::from_file(&file))
        .transpose()
        .map_err(StartError::from)?)
}

/// The configuration: the data dir's file, then the command line.
fn config(cli: &Cli, file: Option<Config>) -> Config {
    let keys = key_settings(cli, file.as_ref());
    let mut config = file.unwrap_or_default();
    config.keys = keys;
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    if let Some(m) = cli.metrics_listen {
        config.metrics_listen = Some(m);
    }
    if let Some(w) = cli.web_listen {
        config.web_listen = Some(w);
    }
    if !cli.web_origins.is_empty() {
        config.web_origins.clone_from(&cli.web_origins);
    }
    if let (Some(cert), Some(key)) = (&cli.web_cert, &cli.web_key) {
        config.web_cert_file = Some(cert.clone());
        config.web_key_file = Some(key.clone());
    }
    if let Some(url) = &cli.database_url {
        config.database_url = Some(config::DatabaseUrl::new(url.clone()));
    }
    if let Some(mode) = cli.attestation {
        config.attestation = mode;
    }
    if let Some(v) = &cli.vsock {
        // A vsock port means a Nitro enclave: attested by its security module unless told.
        if matches!(v, crate::relay::Endpoint::Vsock { .. })
            && cli.attestation.is_none()
            && config.attestation == crate::attestation::Mode::Off
        {
            config.attestation = crate::attestation::Mode::Nsm;
        }
        if let crate::relay::Endpoint::Vsock { .. } = v {
            config.host_calls = Some(crate::relay::Endpoint::Vsock {
                cid: crate::relay::PARENT_CID,
                port: 8000,
            });
        }
        config.vsock = Some(v.clone());
    }
    if let Some(h) = &cli.host_calls {
        config.host_calls = Some(h.clone());
    }
    config
}

/// Keeps this process's memory, which holds unwrapped keys, out of core dumps and away
/// from `ptrace` by other processes of the same user.
fn protect_memory() {
    if let Err(e) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        tracing::warn!(error = %e, "cannot mark the process not dumpable: a core dump could hold keys");
    }
}

/// Runs the command line; returns when the server has shut down.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    protect_memory();
    match cli.command {
        Some(Command::Init {
            simulated_attestation,
        }) => init(cli, simulated_attestation).await,
        Some(Command::RotateKek { to_file, from_file }) => {
            rotate_kek(cli, to_file, from_file).await
        }
        Some(Command::Backup { ref to }) => {
            sqlite_only(&cli, "back up")?;
            crate::backup::backup(&cli.data_dir, to).map_err(|e| CliError::Other(e.to_string()))?;
            println!("backed up {} to {}", cli.data_dir.display(), to.display());
            Ok(())
        }
        Some(Command::Restore { ref from }) => {
            sqlite_only(&cli, "restore")?;
            crate::backup::restore(
                &cli.data_dir,
                from,
                &crate::storage::sqlite::known_migrations(),
            )
            .map_err(|e| CliError::Other(e.to_string()))?;
            println!(
                "restored {} from {} (the database it replaced is {})",
                cli.data_dir.display(),
                from.display(),
                cli.data_dir.join(crate::backup::BEFORE_RESTORE).display()
            );
            Ok(())
        }
        Some(Command::Host {
            ref enclave,
            ref enclave_calls,
            ref database,
        }) => {
            host(
                &cli,
                enclave.clone(),
                enclave_calls.clone(),
                database.clone(),
            )
            .await
        }
        None | Some(Command::Serve) => serve(cli).await,
    }
}

/// Refuses `what` for a deployment on Postgres.
fn sqlite_only(cli: &Cli, what: &str) -> Result<(), CliError> {
    let file = config_file(cli)?;
    if config(cli, file).database_url.is_some() {
        return Err(CliError::Other(format!(
            "this deployment's database is Postgres: {what} it with its own tools \
             (pg_dump and pg_restore, or base backups with WAL archiving)"
        )));
    }
    Ok(())
}

async fn init(cli: Cli, simulated_attestation: bool) -> Result<(), CliError> {
    let file = config_file(&cli)?;
    let key = setup_key(&cli, file.as_ref())?;
    let config = config(&cli, file);
    config.validate().map_err(StartError::from)?;
    let created = data_dir::init(&cli.data_dir, &config::template_with(&config.keys))
        .map_err(StartError::from)?;
    let storage = crate::open_storage(&cli.data_dir, &config).await?;
    let simulated_dir = cli.data_dir.join(crate::attestation::simulated::DIR);
    // Made once: clients may have been told to trust its root.
    let simulated_made = simulated_attestation && !simulated_dir.exists();
    if simulated_made {
        crate::attestation::simulated::create(&cli.data_dir).map_err(StartError::from)?;
    }
    let module =
        crate::attestation::open(config.attestation, &cli.data_dir).map_err(StartError::from)?;
    let opened = crate::unwrap_keys(&storage, &cli.data_dir, &config, key.clone(), module).await?;
    let verb = if created {
        "created"
    } else {
        "already initialised:"
    };
    println!("{verb} {}", cli.data_dir.display());
    let how = match opened.made {
        Made::Created => "made now",
        Made::Imported => "imported from the data dir's server-setup.sealed",
        Made::Opened => "already made",
    };
    println!(
        "the server's keys ({how}) are kept in the database, wrapped by {}.",
        opened.keyring.kek
    );
    if simulated_attestation {
        let dir = simulated_dir;
        println!(
            "{} a simulated security module in {}: serve with --attestation simulated; \
             clients trust it only with --attestation-root {} and --expect-pcrs {}. It is \
             for development and tests: whoever reads its root.key can attest anything.",
            if simulated_made { "made" } else { "kept" },
            dir.display(),
            dir.join(crate::attestation::simulated::ROOT_CERT).display(),
            dir.join(crate::attestation::simulated::PCRS).display(),
        );
    }
    if config.keys.provider == Provider::File {
        println!(
            "that key is in {}. With it and a copy of the database, passwords can be guessed \
             offline: keep it out of database backups (setup_key_file, --setup-key or \
             KEYSERVER_SETUP_KEY choose where it lives), or use a KMS key (--kms-key-id).",
            key.describe()
        );
        if key.is_inside(&cli.data_dir) {
            println!("warning: it is inside the data dir; move it out and set setup_key_file.");
        }
    }
    Ok(())
}

async fn rotate_kek(cli: Cli, to_file: bool, from_file: bool) -> Result<(), CliError> {
    let file = config_file(&cli)?.ok_or_else(|| {
        CliError::Other(format!(
            "{} has no keyserver.toml: is it a data dir?",
            cli.data_dir.display()
        ))
    })?;
    let key = setup_key(&cli, Some(&file))?;
    // The current key is the configuration's; --kms-region and --kms-endpoint are the new
    // key's.
    let current = file.keys.clone();
    let from = if from_file {
        Kek::File(key.clone())
    } else {
        Kek::from_settings(&current, key.clone())
    };
    let new_keys = match (&cli.kms_key_id, to_file) {
        (Some(_), true) => {
            return Err(CliError::Other(
                "give either --kms-key-id (a new KMS key) or --to-file, not both".into(),
            ));
        }
        (Some(id), false) => KeySettings {
            provider: Provider::AwsKms,
            kms_key_id: Some(id.clone()),
            kms_region: cli
                .kms_region
                .clone()
                .or(if current.provider == Provider::File {
                    None
                } else {
                    current.kms_region.clone()
                }),
            kms_endpoint: cli.kms_endpoint.clone().or(current.kms_endpoint.clone()),
        },
        (None, true) => KeySettings::default(),
        (None, false) => {
            return Err(CliError::Other(
                "rotate-kek needs the new key: --kms-key-id ID, or --to-file".into(),
            ));
        }
    };
    let to = Kek::from_settings(&new_keys, key);
    let mut config = config(&cli, Some(file));
    config.keys = new_keys.clone();
    // The edit of keyserver.toml is made (and checked) before the keyring changes, so that
    // a file it cannot edit stops the rotation rather than leave the two disagreeing.
    let path = cli.data_dir.join("keyserver.toml");
    let text =
        crate::files::read_bounded(&path, config::MAX_CONFIG_FILE).map_err(StartError::from)?;
    let text = String::from_utf8(text)
        .map_err(|_| CliError::Other(format!("{}: not UTF-8", path.display())))?;
    let key_file = match (&to, &cli.setup_key) {
        (Kek::File(_), Some(f)) => Some(f.as_path()),
        _ => None,
    };
    let edited = config::with_keys(&text, &new_keys, key_file).map_err(|why| {
        CliError::Other(format!("{}: {why}; nothing was changed", path.display()))
    })?;
    let storage = crate::open_storage(&cli.data_dir, &config).await?;
    // Each KMS call is bounded (five attempts of at most 4 s): this ends.
    let rotated = deployment::rotate(&storage, &from, &to)
        .await
        .map_err(StartError::from)?;
    crate::files::replace_file(&path, edited.as_bytes()).map_err(|e| {
        CliError::Other(format!(
            "the keys are wrapped by {} now (keyring generation {}), but {} could not be \
             updated ({e}): set [keys] there to provider = \"{}\" before the next start",
            rotated.to,
            rotated.generation,
            path.display(),
            new_keys.provider.as_str()
        ))
    })?;
    println!(
        "the deployment's keys are wrapped by {} now (keyring generation {}), no longer by {}.",
        rotated.to, rotated.generation, rotated.from
    );
    println!(
        "{} names the new key. Servers running keep serving; give every other instance's \
         keyserver.toml the same [keys] before it restarts. The old key can then be \
         disabled.",
        path.display()
    );
    Ok(())
}

async fn serve(cli: Cli) -> Result<(), CliError> {
    // The config file lives in the data dir; a new data dir gets it.
    let file = config_file(&cli)?;
    let key = setup_key(&cli, file.as_ref())?;
    let config = config(&cli, file);
    // The handlers are in place before the listening line is printed: a SIGTERM sent as
    // soon as it is read must shut down gracefully, not kill the process.
    let signals = Signals::install()
        .map_err(|e| CliError::Other(format!("cannot listen for signals: {e}")))?;
    let server = Server::start_with(
        cli.data_dir,
        config,
        key,
        std::sync::Arc::new(crate::clock::SystemClock::default()),
    )
    .await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", server.listening_line()).map_err(|e| CliError::Other(e.to_string()))?;
        out.flush().map_err(|e| CliError::Other(e.to_string()))?;
    }
    signals.wait().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

async fn host(
    cli: &Cli,
    enclave: crate::relay::Endpoint,
    calls: Option<crate::relay::Endpoint>,
    database: Option<String>,
) -> Result<(), CliError> {
    let signals = Signals::install()
        .map_err(|e| CliError::Other(format!("cannot listen for signals: {e}")))?;
    let listen = cli.listen.unwrap_or_else(|| Config::default().listen);
    let kms = match (&cli.kms_endpoint, &cli.kms_region) {
        (Some(url), _) => Some(crate::kms::Endpoint::parse(url).map_err(CliError::Other)?),
        (None, Some(region)) => Some(crate::kms::Endpoint::aws(region)),
        (None, None) => None,
    };
    let calls = calls.map(|listen| crate::relay::host::Calls {
        listen,
        kms,
        database,
    });
    let host = crate::relay::host::Host::start(listen, enclave, calls)
        .await
        .map_err(|source| StartError::Bind {
            addr: listen,
            source,
        })?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", host.listening_line()).map_err(|e| CliError::Other(e.to_string()))?;
        out.flush().map_err(|e| CliError::Other(e.to_string()))?;
    }
    signals.wait().await;
    tracing::info!("shutting down");
    host.shutdown();
    Ok(())
}

/// SIGTERM and SIGINT, caught from the moment they are installed.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Returns at the first of them.
    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {},
            _ = self.int.recv() => {},
        }
    }
}
