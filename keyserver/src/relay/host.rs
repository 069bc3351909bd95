//! `keyserver host`: on the enclave's parent instance, accepts clients on UDP (QUIC) and
//! TCP on one port, as the server does outside an enclave, and relays them to the enclave.
//!
//! - Each TCP connection becomes a stream of its own to the enclave, opened with the
//!   client's address; bytes are copied both ways until either side closes.
//! - Every UDP datagram goes over one datagram channel, framed with the client's address;
//!   the enclave's answers come back framed with their destination. When the channel breaks
//!   (the enclave restarted), the relay opens a new one; datagrams in between are lost, as
//!   on any network, and QUIC sends them again.
//!
//! The relay holds no key and sees only TLS records and QUIC's encrypted packets. When it
//! restarts, clients' QUIC connections carry on once it is back on the same port (their
//! packets meanwhile are lost and resent), and TCP clients reconnect: sessions live in the
//! enclave, so the next request resumes.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncWriteExt, BufWriter},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::Semaphore,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Endpoint, KIND_DATAGRAMS, KIND_TCP, opening, put_datagram, read_datagram};

/// Most client TCP connections relayed at once; more wait in the listen backlog.
const MAX_TCP: usize = 10_000;
/// How long opening a stream to the enclave may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest UDP datagram read.
const MAX_DATAGRAM: usize = 65_535;

/// A running relay.
#[derive(Debug)]
pub struct Host {
    quic_addr: SocketAddr,
    tcp_addr: SocketAddr,
    shutdown: CancellationToken,
}

impl Host {
    /// Binds UDP and TCP on `listen` (the same port number for both; port 0 picks one) and
    /// relays to `enclave`; with `calls`, also serves the enclave's calls there.
    pub async fn start(
        listen: SocketAddr,
        enclave: Endpoint,
        calls: Option<Calls>,
    ) -> std::io::Result<Self> {
        let calls = match calls {
            Some(c) => Some((
                c.listen.listen()?,
                Targets {
                    kms: c.kms,
                    database: c.database,
                },
            )),
            None => None,
        };
        let (udp, tcp) = bind(listen).await?;
        let quic_addr = udp.local_addr()?;
        let tcp_addr = tcp.local_addr()?;
        let shutdown = CancellationToken::new();
        let enclave = Arc::new(enclave);
        tokio::spawn(datagrams(Arc::new(udp), enclave.clone(), shutdown.clone()));
        tokio::spawn(connections(tcp, enclave, shutdown.clone()));
        if let Some((listener, targets)) = calls {
            tokio::spawn(enclave_calls(listener, Arc::new(targets), shutdown.clone()));
        }
        info!(quic = %quic_addr, tcp = %tcp_addr, "relaying");
        Ok(Self {
            quic_addr,
            tcp_addr,
            shutdown,
        })
    }

    /// The line printed once the relay accepts clients.
    pub fn listening_line(&self) -> String {
        format!(
            "keyserver-host listening quic={} tcp={}",
            self.quic_addr, self.tcp_addr
        )
    }

    /// Stops relaying (connections in progress are dropped).
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }
}

/// Where the host takes the enclave's calls, and the one KMS endpoint it connects them to.
#[derive(Clone, Debug)]
pub struct Calls {
    /// Where to listen (a vsock port, or a Unix socket).
    pub listen: Endpoint,
    /// KMS; `None`: KMS connections are refused (credentials are still lent).
    pub kms: Option<crate::kms::Endpoint>,
    /// The database (`HOST:PORT`); `None`: database connections are refused.
    pub database: Option<String>,
}

/// Where the enclave's calls may lead.
#[derive(Debug)]
struct Targets {
    kms: Option<crate::kms::Endpoint>,
    database: Option<String>,
}

/// The most enclave calls open at once (KMS and database connections, credentials).
const MAX_CALLS: usize = 256;

/// Serves the enclave's calls: connections to KMS and to the database, and credentials.
async fn enclave_calls(
    listener: super::Listener,
    targets: Arc<Targets>,
    shutdown: CancellationToken,
) {
    let calls = Arc::new(Semaphore::new(MAX_CALLS));
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            s = listener.accept() => match s {
                Ok(s) => s,
                Err(e) => {
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = calls.clone().try_acquire_owned() else {
            warn!("an enclave call refused: {MAX_CALLS} already open");
            continue;
        };
        let targets = targets.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = enclave_call(stream, &targets).await {
                warn!(error = %e, "an enclave call refused or cut short");
            }
        });
    }
}

async fn enclave_call(
    mut stream: super::Stream,
    targets: &Targets,
) -> Result<(), super::WireError> {
    use crate::kms::enclave::{KIND_CREDENTIALS, KIND_KMS};
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 5];
    tokio::time::timeout(CONNECT_TIMEOUT, stream.read_exact(&mut head))
        .await
        .map_err(|_| super::WireError::Malformed("nothing said in time"))??;
    if head[..4] != super::MAGIC {
        return Err(super::WireError::Malformed("not a relay stream"));
    }
    match head[4] {
        KIND_CREDENTIALS => {
            let lent = match crate::kms::Credentials::from_environment() {
                Ok(c) => crate::kms::enclave::lend(&c),
                Err(e) => {
                    warn!(error = %e, "the enclave asked for credentials and there are none");
                    zeroize::Zeroizing::new(vec![0, 0])
                }
            };
            stream.write_all(&lent).await?;
            stream.shutdown().await?;
            Ok(())
        }
        KIND_KMS => {
            let read_target = async {
                let mut len = [0u8; 2];
                stream.read_exact(&mut len).await?;
                let len = usize::from(u16::from_be_bytes(len));
                if len > 255 {
                    return Err(super::WireError::Malformed(
                        "a host name longer than 255 bytes",
                    ));
                }
                let mut host = vec![0u8; len];
                stream.read_exact(&mut host).await?;
                let mut port = [0u8; 2];
                stream.read_exact(&mut port).await?;
                Ok((host, u16::from_be_bytes(port)))
            };
            let (host, port) = tokio::time::timeout(CONNECT_TIMEOUT, read_target)
                .await
                .map_err(|_| super::WireError::Malformed("no KMS address in time"))??;
            let Some(kms) = targets
                .kms
                .as_ref()
                .filter(|k| k.host.as_bytes() == host && k.port == port)
            else {
                return Err(super::WireError::Malformed(
                    "a connection to somewhere other than the KMS endpoint this host was given",
                ));
            };
            let mut to = tokio::time::timeout(
                CONNECT_TIMEOUT,
                TcpStream::connect((kms.host.as_str(), kms.port)),
            )
            .await
            .map_err(|_| std::io::Error::other("KMS did not accept in time"))??;
            let _ = to.set_nodelay(true);
            tokio::io::copy_bidirectional(&mut stream, &mut to).await?;
            Ok(())
        }
        super::KIND_DATABASE => {
            let Some(database) = targets.database.as_deref() else {
                return Err(super::WireError::Malformed(
                    "a database connection, and this host was given no --database",
                ));
            };
            let mut to = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(database))
                .await
                .map_err(|_| std::io::Error::other("the database did not accept in time"))??;
            let _ = to.set_nodelay(true);
            tokio::io::copy_bidirectional(&mut stream, &mut to).await?;
            Ok(())
        }
        _ => Err(super::WireError::Malformed("an unknown call")),
    }
}

/// UDP and TCP on one port number; with port 0, a port both can have.
async fn bind(listen: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    let attempts = if listen.port() == 0 { 20 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = UdpSocket::bind(listen).await?;
        let port = udp.local_addr()?.port();
        match TcpListener::bind(SocketAddr::new(listen.ip(), port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no port")))
}

/// Opens a stream of `kind` to the enclave, within [`CONNECT_TIMEOUT`].
async fn open(
    enclave: &Endpoint,
    kind: u8,
    client: Option<SocketAddr>,
) -> std::io::Result<super::Stream> {
    let mut s = tokio::time::timeout(CONNECT_TIMEOUT, enclave.connect())
        .await
        .map_err(|_| std::io::Error::other("the enclave did not accept in time"))??;
    s.write_all(&opening(kind, client)).await?;
    Ok(s)
}

/// Keeps one datagram channel open to the enclave and moves datagrams both ways.
async fn datagrams(udp: Arc<UdpSocket>, enclave: Arc<Endpoint>, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let channel = tokio::select! {
            () = shutdown.cancelled() => return,
            c = open(&enclave, KIND_DATAGRAMS, None) => c,
        };
        let channel = match channel {
            Ok(c) => c,
            Err(e) => {
                debug!(error = %e, enclave = %enclave.describe(), "no datagram channel yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        info!(enclave = %enclave.describe(), "datagram channel open");
        let (from_enclave, to_enclave) = tokio::io::split(channel);
        let ended = tokio::select! {
            () = shutdown.cancelled() => return,
            r = to_clients(from_enclave, &udp) => r,
            r = to_enclave_from(&udp, to_enclave) => r.map_err(super::WireError::from),
        };
        if let Err(e) = ended {
            warn!(error = %e, "the datagram channel closed; opening another");
        }
    }
}

/// Sends the enclave's datagrams on to their destinations, until the channel fails.
async fn to_clients(
    mut from_enclave: impl tokio::io::AsyncRead + Unpin,
    udp: &UdpSocket,
) -> Result<(), super::WireError> {
    let mut buf = Vec::with_capacity(MAX_DATAGRAM);
    loop {
        let (addr, range) = read_datagram(&mut from_enclave, &mut buf).await?;
        // A datagram that cannot be sent now is lost, as UDP may lose it.
        let _ = udp.try_send_to(buf.get(range).unwrap_or_default(), addr);
    }
}

/// Frames clients' datagrams to the enclave, until the channel fails.
async fn to_enclave_from(
    udp: &UdpSocket,
    to_enclave: impl tokio::io::AsyncWrite + Unpin,
) -> std::io::Result<()> {
    let mut w = BufWriter::new(to_enclave);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut frame = Vec::with_capacity(MAX_DATAGRAM + 32);
    loop {
        let (n, from) = udp.recv_from(&mut buf).await?;
        frame.clear();
        put_datagram(&mut frame, from, buf.get(..n).unwrap_or_default());
        // Every datagram already waiting goes in the same write.
        while frame.len() < 256 * 1024 {
            match udp.try_recv_from(&mut buf) {
                Ok((n, from)) => put_datagram(&mut frame, from, buf.get(..n).unwrap_or_default()),
                Err(_) => break,
            }
        }
        w.write_all(&frame).await?;
        w.flush().await?;
    }
}

/// Relays each client TCP connection over a stream of its own.
async fn connections(tcp: TcpListener, enclave: Arc<Endpoint>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_TCP));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (client, from) = tokio::select! {
            () = shutdown.cancelled() => return,
            a = tcp.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (enclave, shutdown) = (enclave.clone(), shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => {},
                () = relay_tcp(client, from, &enclave) => {},
            }
            drop(slot);
        });
    }
}

async fn relay_tcp(mut client: TcpStream, from: SocketAddr, enclave: &Endpoint) {
    let _ = client.set_nodelay(true);
    let mut to = match open(enclave, KIND_TCP, Some(from)).await {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, enclave = %enclave.describe(), "cannot reach the enclave");
            return;
        }
    };
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut to).await {
        debug!(error = %e, %from, "relayed connection ended");
    }
}
