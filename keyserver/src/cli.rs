//! The `keyserver` command line.

use std::{io::Write, net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand};

use crate::{Server, StartError, config::Config, data_dir};

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

/// Runs the command line; returns when the server has shut down.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Some(Command::Init) => {
            let created = data_dir::init(&cli.data_dir).map_err(StartError::from)?;
            let verb = if created {
                "created"
            } else {
                "already initialised:"
            };
            println!("{verb} {}", cli.data_dir.display());
            Ok(())
        }
        None | Some(Command::Serve) => serve(cli).await,
    }
}

async fn serve(cli: Cli) -> Result<(), CliError> {
    data_dir::init(&cli.data_dir).map_err(StartError::from)?;
    let mut config =
        Config::from_file(&cli.data_dir.join("keyserver.toml")).map_err(StartError::from)?;
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    if cli.database_url.is_some() {
        config.database_url = cli.database_url;
    }
    let server = Server::start(cli.data_dir, config).await?;
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
