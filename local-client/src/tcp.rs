//! TLS 1.3 over TCP: many requests in flight on one connection, each frame tagged with a
//! request id so answers can come back in any order (`keyserver_protocol::frame`).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use keyserver_protocol::frame::{self, HEADER_LEN};
use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, BufWriter},
    net::TcpStream,
    sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot},
};
use tokio_util::sync::CancellationToken;

use async_trait::async_trait;

use crate::{
    ClientError,
    connect::{CONNECT_TIMEOUT, REQUEST_TIMEOUT},
    link::{Link, LinkError},
};

/// Most requests this client keeps in flight on one connection (the server's default
/// limit); more wait for a slot.
pub const MAX_IN_FLIGHT: usize = 256;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>>;

/// One TLS-over-TCP connection. Cheap to clone; clones share it.
#[derive(Clone, Debug)]
pub struct TcpLink {
    tx: mpsc::Sender<Vec<u8>>,
    pending: Pending,
    next_id: Arc<AtomicU64>,
    slots: Arc<Semaphore>,
    dead: CancellationToken,
    peer_certificate: Option<Vec<u8>>,
}

fn lock(p: &Pending) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Vec<u8>>>> {
    p.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl TcpLink {
    /// Connects, runs the TLS handshake (checking the certificate names `server_name`) and
    /// starts the reader and writer tasks.
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        tls: rustls::ClientConfig,
    ) -> Result<Self, ClientError> {
        let name = ServerName::try_from(server_name.to_string()).map_err(|_| {
            ClientError::InvalidInput(format!("invalid server name {server_name:?}"))
        })?;
        let connect = async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|e| ClientError::Unreachable(format!("{addr}: {e}")))?;
            let _ = tcp.set_nodelay(true);
            tokio_rustls::TlsConnector::from(Arc::new(tls))
                .connect(name, tcp)
                .await
                .map_err(|e| {
                    if e.kind() == std::io::ErrorKind::InvalidData {
                        ClientError::Tls(e.to_string())
                    } else {
                        ClientError::Unreachable(e.to_string())
                    }
                })
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| {
                ClientError::Unreachable(format!(
                    "no answer from {addr} within {CONNECT_TIMEOUT:?}"
                ))
            })??;
        // rustls lets a TLS-over-TCP handshake finish without ALPN (QUIC refuses that):
        // a server that did not agree on ours speaks something else.
        if stream.get_ref().1.alpn_protocol() != Some(keyserver_protocol::ALPN) {
            return Err(ClientError::Tls(
                "the server did not agree on this version of the keyserver protocol (ALPN)".into(),
            ));
        }
        let peer_certificate = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec());
        let (mut reader, writer) = tokio::io::split(stream);
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(MAX_IN_FLIGHT);
        let pending: Pending = Arc::default();
        let dead = CancellationToken::new();

        let d = dead.clone();
        tokio::spawn(async move {
            let mut w = BufWriter::new(writer);
            loop {
                let frame = tokio::select! {
                    () = d.cancelled() => break,
                    f = rx.recv() => match f { Some(f) => f, None => break },
                };
                let mut ok = w.write_all(&frame).await.is_ok();
                while ok && let Ok(more) = rx.try_recv() {
                    ok = w.write_all(&more).await.is_ok();
                }
                if !ok || w.flush().await.is_err() {
                    break;
                }
            }
            d.cancel();
            let _ = w.shutdown().await;
        });

        let (d, p) = (dead.clone(), pending.clone());
        tokio::spawn(async move {
            loop {
                let mut header = [0u8; HEADER_LEN];
                let read = tokio::select! {
                    () = d.cancelled() => break,
                    r = reader.read_exact(&mut header) => r,
                };
                if read.is_err() {
                    break;
                }
                let Ok(len) = frame::payload_len(header) else {
                    break;
                };
                let mut payload = vec![0u8; len];
                if reader.read_exact(&mut payload).await.is_err() {
                    break;
                }
                let Ok(f) = frame::parse_payload(payload) else {
                    break;
                };
                if let Some(waiter) = lock(&p).remove(&f.id) {
                    let _ = waiter.send(f.body);
                }
            }
            d.cancel();
            // Dropping the waiters fails every request still in flight.
            lock(&p).clear();
        });

        Ok(Self {
            tx,
            pending,
            next_id: Arc::new(AtomicU64::new(1)),
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            dead,
            peer_certificate,
        })
    }

    /// Sends one request and waits for its answer.
    pub async fn call(&self, req: &[u8]) -> Result<Vec<u8>, LinkError> {
        let _permit: OwnedSemaphorePermit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| LinkError::Lost("connection closed".into()))?;
        if self.dead.is_cancelled() {
            return Err(LinkError::Lost("connection closed".into()));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (otx, orx) = oneshot::channel();
        lock(&self.pending).insert(id, otx);
        let _guard = Forget {
            pending: &self.pending,
            id,
        };
        self.tx
            .send(frame::encode(id, req))
            .await
            .map_err(|_| LinkError::Lost("connection closed".into()))?;
        tokio::select! {
            r = orx => r.map_err(|_| LinkError::Lost("connection closed".into())),
            () = self.dead.cancelled() => Err(LinkError::Lost("connection closed".into())),
            () = tokio::time::sleep(REQUEST_TIMEOUT) => Err(LinkError::Lost(format!("no response within {REQUEST_TIMEOUT:?}"))),
        }
    }

    /// Whether the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.dead.is_cancelled()
    }
}

#[async_trait]
impl Link for TcpLink {
    async fn call(&self, request: &[u8]) -> Result<Vec<u8>, LinkError> {
        Self::call(self, request).await
    }

    fn close(&self) {
        self.dead.cancel();
    }

    fn peer_certificate(&self) -> Option<Vec<u8>> {
        self.peer_certificate.clone()
    }
}

/// Removes a request's waiter however the call ends (answer, error or cancellation).
struct Forget<'a> {
    pending: &'a Pending,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(self.pending).remove(&self.id);
    }
}
