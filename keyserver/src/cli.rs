//! The `keyserver` command line.

use std::{io::Write, net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand};

use crate::{
    Server, StartError,
    config::Config,
    data_dir,
    server_setup::{self, SetupKeySource},
};

/// A key server: OPAQUE login, client-sealed secrets, a hash-chained audit log.
#[derive(Debug, Parser)]
#[command(name = "keyserver", version, about)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The data dir: created on first start with a development PKI, the OPAQUE setup, a
    /// commented config file and the SQLite database.
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
    /// The file holding the key that seals the server's OPAQUE setup [default: setup_key_file
    /// in keyserver.toml, else <data dir>.setup.key, next to the data dir]. The
    /// KEYSERVER_SETUP_KEY environment variable (the key itself, 64 hex digits, for secret
    /// managers) overrides it.
    #[arg(long, global = true, env = "KEYSERVER_SETUP_KEY_FILE")]
    pub setup_key: Option<PathBuf>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve (the default).
    Serve,
    /// Create the data dir and exit.
    Init,
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

/// Where the setup key comes from: `KEYSERVER_SETUP_KEY` (the key itself), else
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

/// Runs the command line; returns when the server has shut down.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Some(Command::Init) => {
            let key = setup_key(&cli, None)?;
            let created = data_dir::init(&cli.data_dir, &key).map_err(StartError::from)?;
            let verb = if created {
                "created"
            } else {
                "already initialised:"
            };
            println!("{verb} {}", cli.data_dir.display());
            println!(
                "the key that seals the server's OPAQUE setup is in {}. With it and a copy of \
                 the database, passwords can be guessed offline: keep it out of database \
                 backups (setup_key_file, --setup-key or KEYSERVER_SETUP_KEY choose where it \
                 lives).",
                key.describe()
            );
            if key.is_inside(&cli.data_dir) {
                println!("warning: it is inside the data dir; move it out and set setup_key_file.");
            }
            Ok(())
        }
        None | Some(Command::Serve) => serve(cli).await,
    }
}

async fn serve(cli: Cli) -> Result<(), CliError> {
    // The config file lives in the data dir; a new data dir gets it with the key.
    let file = cli.data_dir.join("keyserver.toml");
    let config = file
        .is_file()
        .then(|| Config::from_file(&file))
        .transpose()
        .map_err(StartError::from)?;
    let key = setup_key(&cli, config.as_ref())?;
    data_dir::init(&cli.data_dir, &key).map_err(StartError::from)?;
    let mut config = Config::from_file(&file).map_err(StartError::from)?;
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    if let Some(url) = cli.database_url {
        config.database_url = Some(crate::config::DatabaseUrl::new(url));
    }
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
    wait_for_signal()
        .await
        .map_err(|e| CliError::Other(format!("cannot listen for signals: {e}")))?;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}
