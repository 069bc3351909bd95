//! The enclave's database connections, through the host. An enclave has no network, so
//! inside one (`serve --vsock` with `--host-calls`) the server reaches Postgres through
//! `keyserver host`, which connects to the one database address it was given
//! (`--database HOST:PORT`):
//!
//! ```text
//! sqlx ─Unix socket─▶ forwarder (in the enclave) ─vsock: "KSR1" || 5─▶ host ─TCP─▶ Postgres
//! ```
//!
//! sqlx speaks to a Unix socket in the data dir (`database-relay/.s.PGSQL.5432`); each
//! connection there becomes one stream to the host, which names no address: the host
//! decides where the database is. The host is the database's operator anyway (adversary E
//! in the threat model): what the enclave keeps there is sealed or wrapped, and the audit
//! chain and the client's memory catch what the host changes.

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::{
    io::AsyncWriteExt,
    net::{UnixListener, UnixStream},
};
use tracing::{debug, warn};

use super::{Endpoint, KIND_DATABASE, opening};

/// The port sqlx is told, which names the socket file (`.s.PGSQL.5432`); the database's
/// real address is the host's business.
pub const SOCKET_PORT: u16 = 5432;

/// How long opening a stream to the host may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Listens on a Unix socket in `dir` (made 0700; a socket left by an earlier run replaced)
/// and carries each connection to the host at `host`. Returns the directory to give sqlx
/// (`PgConnectOptions::socket`, with port [`SOCKET_PORT`]). The forwarder runs as long as
/// the process.
pub fn through_host(host: Endpoint, dir: &Path) -> io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let socket = dir.join(format!(".s.PGSQL.{SOCKET_PORT}"));
    if std::fs::symlink_metadata(&socket).is_ok_and(|m| m.file_type().is_socket()) {
        std::fs::remove_file(&socket)?;
    }
    let listener = UnixListener::bind(&socket)?;
    tokio::spawn(forward(listener, host));
    Ok(dir.to_path_buf())
}

async fn forward(listener: UnixListener, host: Endpoint) {
    loop {
        match listener.accept().await {
            Ok((local, _)) => {
                let host = host.clone();
                tokio::spawn(async move {
                    if let Err(e) = carry(local, &host).await {
                        warn!(error = %e, host = %host.describe(), "a database connection through the host failed");
                    }
                });
            }
            Err(e) => {
                debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn carry(mut local: UnixStream, host: &Endpoint) -> io::Result<()> {
    let mut to = tokio::time::timeout(CONNECT_TIMEOUT, host.connect())
        .await
        .map_err(|_| io::Error::other("the host did not accept in time"))??;
    to.write_all(&opening(KIND_DATABASE, None)).await?;
    tokio::io::copy_bidirectional(&mut local, &mut to).await?;
    Ok(())
}
