//! The enclave's side of the relay (`crate::relay`): streams accepted on vsock (or a Unix
//! socket) become either a client's TLS connection, served as TCP connections are, or the
//! datagram channel that feeds quinn through [`RelayedUdp`], an abstract UDP socket.
//!
//! An answer goes back over the channel that last brought a datagram from its destination
//! (else the newest channel): when the relay restarts, its new channel takes over each
//! client with the client's next packet, and QUIC connections carry on; a channel that
//! brings nothing (or garbage) takes no client's answers.

use std::{
    collections::HashMap,
    fmt,
    io::IoSliceMut,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use quinn::{
    AsyncUdpSocket, UdpPoller,
    udp::{RecvMeta, Transmit},
};
use tokio::{
    io::{AsyncWriteExt, BufWriter},
    sync::mpsc,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::relay::{self, KIND_TCP, Listener, Stream};

/// Datagrams from clients waiting for quinn, at most; more are dropped, as a full socket
/// buffer drops them.
const INBOUND: usize = 4096;
/// Frames to clients waiting for the channel's writer, at most.
const OUTBOUND: usize = 4096;
/// How long the relay may take to say what a stream is.
const OPENING_TIMEOUT: Duration = Duration::from_secs(5);

/// A UDP socket for quinn whose datagrams travel over the relay's datagram channel.
pub struct RelayedUdp {
    inbound: Mutex<mpsc::Receiver<(SocketAddr, Vec<u8>)>>,
    inbound_tx: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    /// The queues of frames of the channels open, oldest first.
    outbound: Mutex<Vec<mpsc::Sender<Vec<u8>>>>,
    /// Which channel last brought a datagram from each address (at most [`ROUTES`]).
    routes: Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>,
}

/// Addresses remembered, at most; past it, routes of closed channels go, then all (each
/// client's next packet brings its route back).
const ROUTES: usize = 100_000;

impl fmt::Debug for RelayedUdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayedUdp").finish_non_exhaustive()
    }
}

impl RelayedUdp {
    /// A socket with no channel yet.
    pub fn new() -> Arc<Self> {
        let (inbound_tx, inbound) = mpsc::channel(INBOUND);
        Arc::new(Self {
            inbound: Mutex::new(inbound),
            inbound_tx,
            outbound: Mutex::new(Vec::new()),
            routes: Mutex::new(HashMap::new()),
        })
    }

    /// Carries datagrams over `stream` from now on, until it ends.
    fn attach(self: &Arc<Self>, stream: Stream, shutdown: CancellationToken) {
        let (mut reader, writer) = tokio::io::split(stream);
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(OUTBOUND);
        self.outbound
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(tx.clone());
        info!("datagram channel open");
        let done = CancellationToken::new();
        let stop = done.clone();
        tokio::spawn(async move {
            let mut w = BufWriter::new(writer);
            loop {
                let frame = tokio::select! {
                    () = stop.cancelled() => break,
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
        });
        let socket = self.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            loop {
                let read = tokio::select! {
                    () = shutdown.cancelled() => break,
                    r = relay::read_datagram(&mut reader, &mut buf) => r,
                };
                match read {
                    // A full queue drops the datagram, as a full socket buffer would.
                    Ok((addr, range)) => {
                        socket.route(addr, &tx);
                        let _ = socket
                            .inbound_tx
                            .try_send((addr, buf.get(range).unwrap_or_default().to_vec()));
                    }
                    Err(e) => {
                        debug!(error = %e, "datagram channel ended");
                        break;
                    }
                }
            }
            done.cancel();
            socket
                .outbound
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|s| !s.same_channel(&tx));
        });
    }
}

impl RelayedUdp {
    /// Answers to `addr` go over `channel` from now on.
    fn route(&self, addr: SocketAddr, channel: &mpsc::Sender<Vec<u8>>) {
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        if routes.get(&addr).is_some_and(|c| c.same_channel(channel)) {
            return;
        }
        if routes.len() >= ROUTES {
            routes.retain(|_, c| !c.is_closed());
            if routes.len() >= ROUTES {
                routes.clear();
            }
        }
        routes.insert(addr, channel.clone());
    }

    /// The channel an answer to `addr` goes over.
    fn channel_to(&self, addr: SocketAddr) -> Option<mpsc::Sender<Vec<u8>>> {
        let routed = self
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&addr)
            .filter(|c| !c.is_closed())
            .cloned();
        routed.or_else(|| {
            self.outbound
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .last()
                .cloned()
        })
    }
}

/// Sending never waits: a datagram that finds no room is dropped, as UDP may drop it.
#[derive(Debug)]
struct AlwaysWritable;

impl UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncUdpSocket for RelayedUdp {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> std::io::Result<()> {
        let Some(out) = self.channel_to(transmit.destination) else {
            return Ok(());
        };
        let segment = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        let mut frame = Vec::with_capacity(transmit.contents.len() + 32);
        for datagram in transmit.contents.chunks(segment) {
            relay::put_datagram(&mut frame, transmit.destination, datagram);
        }
        let _ = out.try_send(frame);
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<std::io::Result<usize>> {
        let mut inbound = self.inbound.lock().unwrap_or_else(PoisonError::into_inner);
        let mut n = 0;
        while n < bufs.len().min(meta.len()) {
            let next = if n == 0 {
                match inbound.poll_recv(cx) {
                    Poll::Ready(Some(d)) => d,
                    Poll::Ready(None) => {
                        return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
                    }
                    Poll::Pending => return Poll::Pending,
                }
            } else {
                match inbound.try_recv() {
                    Ok(d) => d,
                    Err(_) => break,
                }
            };
            let (addr, payload) = next;
            let (Some(buf), Some(m)) = (bufs.get_mut(n), meta.get_mut(n)) else {
                break;
            };
            if payload.len() > buf.len() {
                continue;
            }
            buf[..payload.len()].copy_from_slice(&payload);
            *m = RecvMeta {
                addr,
                len: payload.len(),
                stride: payload.len(),
                ecn: None,
                dst_ip: None,
            };
            n += 1;
        }
        if n == 0 {
            // Only oversized datagrams were waiting: look again.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Ok(n))
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    fn may_fragment(&self) -> bool {
        // Datagrams are carried whole; the relay's own socket sends them on.
        true
    }
}

/// Accepts the relay's streams until `shutdown`: TCP connections go to `tcp`, datagram
/// channels to `udp`.
pub async fn serve(
    listener: Listener,
    tcp: super::tcp::Context,
    udp: Arc<RelayedUdp>,
    shutdown: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            s = listener.accept() => match s {
                Ok(s) => s,
                Err(e) => {
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (tcp, udp, shutdown) = (tcp.clone(), udp.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut stream = stream;
            let opened = tokio::time::timeout(OPENING_TIMEOUT, async {
                match relay::read_opening(&mut stream).await? {
                    KIND_TCP => Ok(Some(relay::read_address(&mut stream).await?)),
                    _ => Ok::<_, relay::WireError>(None),
                }
            })
            .await;
            match opened {
                Ok(Ok(Some(client))) => tcp.accept(stream, client),
                Ok(Ok(None)) => udp.attach(stream, shutdown),
                Ok(Err(e)) => debug!(error = %e, "a relay stream refused"),
                Err(_) => debug!("a relay stream said nothing in time"),
            }
        });
    }
}
