//! The enclave's link to the world. A Nitro enclave has no network, only vsock (a stream
//! socket) to its parent instance; on the parent, `keyserver host` accepts clients on UDP and
//! TCP and relays them to the enclave (`keyserver serve --vsock PORT`).
//!
//! ```text
//! client ─QUIC/UDP─┐                     ┌─ datagram channel ─▶ quinn (abstract UDP socket)
//!                  ├─ keyserver host ─vsock┤
//! client ─TLS/TCP──┘   (no key; sees       └─ one stream per TCP connection ─▶ TLS server
//!                       only TLS)
//! ```
//!
//! Every stream the relay opens starts with [`MAGIC`] and a kind:
//!
//! ```text
//! opening  = "KSR1" || kind (u8)
//! kind 1   = a client's TCP connection: address, then the connection's bytes both ways
//! kind 2   = the datagram channel: datagram frames both ways
//! address  = family (u8: 4 or 6) || IP (4 or 16 bytes) || port (u16 BE)
//! datagram = length (u16 BE, of what follows) || address || payload
//! ```
//!
//! The enclave's own calls go the other way, to the host (`serve --host-calls`, `host
//! --enclave-calls`): kinds 3 and 4 reach KMS and borrow credentials (`kms::enclave`), kind
//! 5 reaches the database ([`database`]).
//!
//! The address is the client's (towards the enclave) or the destination (from it). The
//! host chooses it: a hostile host can present any address, so nothing that protects an
//! account depends on it (guess limits count per account; see the threat model). The relay
//! holds no key and sees only TLS and QUIC's encrypted packets.
//!
//! [`Endpoint`] names either side: a vsock address, or a Unix socket for machines without
//! vsock (tests, and development).

pub mod database;
pub mod host;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    pin::Pin,
    str::FromStr,
};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

/// The context id of a Nitro enclave's parent instance, as the enclave reaches it (always
/// 3; vsock's generic `VMADDR_CID_HOST`, 2, is not it).
pub const PARENT_CID: u32 = 3;

/// The first bytes of every stream the relay opens.
pub const MAGIC: [u8; 4] = *b"KSR1";
/// A client's TCP connection.
pub const KIND_TCP: u8 = 1;
/// The datagram channel.
pub const KIND_DATAGRAMS: u8 = 2;
/// A database connection, from the enclave to the host (kinds 3 and 4, KMS and
/// credentials, are in `kms::enclave`).
pub const KIND_DATABASE: u8 = 5;
/// The most bytes an address takes.
pub const MAX_ADDRESS: usize = 1 + 16 + 2;
/// The most bytes a datagram frame's length may say (address and payload).
pub const MAX_DATAGRAM_FRAME: usize = u16::MAX as usize;

/// A byte stream to or from the other side.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A boxed [`Io`].
pub type Stream = Pin<Box<dyn Io>>;

/// Where the enclave listens, or where the host finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// vsock: a context id (the enclave's, from the host; any, when listening) and a port.
    Vsock {
        /// The context id.
        cid: u32,
        /// The port.
        port: u32,
    },
    /// A Unix socket.
    Unix(PathBuf),
}

impl Endpoint {
    /// How the listening line and messages show it: `PORT`, `CID:PORT` or `unix:PATH`.
    pub fn describe(&self) -> String {
        match self {
            Self::Vsock { cid, port } if *cid == tokio_vsock::VMADDR_CID_ANY => port.to_string(),
            Self::Vsock { cid, port } => format!("{cid}:{port}"),
            Self::Unix(p) => format!("unix:{}", p.display()),
        }
    }

    /// Opens a stream to it.
    pub async fn connect(&self) -> std::io::Result<Stream> {
        match self {
            Self::Vsock { cid, port } => {
                let s = tokio_vsock::VsockStream::connect(tokio_vsock::VsockAddr::new(*cid, *port))
                    .await?;
                Ok(Box::pin(s))
            }
            Self::Unix(p) => Ok(Box::pin(tokio::net::UnixStream::connect(p).await?)),
        }
    }

    /// Listens on it (a Unix socket left by a previous run is replaced).
    pub fn listen(&self) -> std::io::Result<Listener> {
        match self {
            Self::Vsock { cid, port } => Ok(Listener::Vsock(tokio_vsock::VsockListener::bind(
                tokio_vsock::VsockAddr::new(*cid, *port),
            )?)),
            Self::Unix(p) => {
                if std::fs::symlink_metadata(p)
                    .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                {
                    std::fs::remove_file(p)?;
                }
                let listener = tokio::net::UnixListener::bind(p)?;
                // Only this user connects: the host's calls socket lends AWS credentials.
                std::fs::set_permissions(
                    p,
                    <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
                )?;
                Ok(Listener::Unix(listener))
            }
        }
    }
}

/// `PORT` (vsock, any context id: the enclave listening), `CID:PORT` (vsock), or
/// `unix:PATH`.
impl FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a path".into());
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        let number = |n: &str, what: &str| {
            n.parse::<u32>().map_err(|_| {
                format!("{what} {n:?} is not a number (expected PORT, CID:PORT or unix:PATH)")
            })
        };
        match s.split_once(':') {
            Some((cid, port)) => Ok(Self::Vsock {
                cid: number(cid, "the vsock context id")?,
                port: number(port, "the vsock port")?,
            }),
            None => Ok(Self::Vsock {
                cid: tokio_vsock::VMADDR_CID_ANY,
                port: number(s, "the vsock port")?,
            }),
        }
    }
}

/// A listening socket of either kind.
#[derive(Debug)]
pub enum Listener {
    /// vsock.
    Vsock(tokio_vsock::VsockListener),
    /// A Unix socket.
    Unix(tokio::net::UnixListener),
}

impl Listener {
    /// The next stream.
    pub async fn accept(&self) -> std::io::Result<Stream> {
        match self {
            Self::Vsock(l) => Ok(Box::pin(l.accept().await?.0)),
            Self::Unix(l) => Ok(Box::pin(l.accept().await?.0)),
        }
    }
}

/// A malformed opening or frame: the stream is closed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The bytes are not what the relay sends.
    #[error("malformed relay stream: {0}")]
    Malformed(&'static str),
    /// The stream failed or ended.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Appends `addr` in the relay's encoding.
pub fn put_address(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// An address at the start of `b`, and the rest.
pub fn take_address(b: &[u8]) -> Result<(SocketAddr, &[u8]), WireError> {
    let short = WireError::Malformed("a truncated address");
    let (family, rest) = b.split_first().ok_or(short)?;
    let (ip, rest): (IpAddr, &[u8]) = match family {
        4 => {
            let (ip, rest) = rest
                .split_first_chunk::<4>()
                .ok_or(WireError::Malformed("a truncated address"))?;
            (Ipv4Addr::from(*ip).into(), rest)
        }
        6 => {
            let (ip, rest) = rest
                .split_first_chunk::<16>()
                .ok_or(WireError::Malformed("a truncated address"))?;
            (Ipv6Addr::from(*ip).into(), rest)
        }
        _ => return Err(WireError::Malformed("an address family other than 4 or 6")),
    };
    let (port, rest) = rest
        .split_first_chunk::<2>()
        .ok_or(WireError::Malformed("a truncated address"))?;
    Ok((SocketAddr::new(ip, u16::from_be_bytes(*port)), rest))
}

/// Reads an address from a stream.
pub async fn read_address(r: &mut (impl AsyncRead + Unpin)) -> Result<SocketAddr, WireError> {
    let mut family = [0u8; 1];
    r.read_exact(&mut family).await?;
    let len = match family[0] {
        4 => 4,
        6 => 16,
        _ => return Err(WireError::Malformed("an address family other than 4 or 6")),
    };
    let mut buf = [0u8; MAX_ADDRESS];
    buf[0] = family[0];
    r.read_exact(&mut buf[1..1 + len + 2]).await?;
    Ok(take_address(&buf[..1 + len + 2])?.0)
}

/// The opening of a stream: its kind, and for a TCP connection the client's address.
pub fn opening(kind: u8, client: Option<SocketAddr>) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.push(kind);
    if let Some(a) = client {
        put_address(&mut out, a);
    }
    out
}

/// Reads an opening's magic and kind.
pub async fn read_opening(r: &mut (impl AsyncRead + Unpin)) -> Result<u8, WireError> {
    let mut head = [0u8; 5];
    r.read_exact(&mut head).await?;
    if head[..4] != MAGIC {
        return Err(WireError::Malformed("not a relay stream"));
    }
    match head[4] {
        k @ (KIND_TCP | KIND_DATAGRAMS) => Ok(k),
        _ => Err(WireError::Malformed("an unknown stream kind")),
    }
}

/// Appends one datagram frame for `payload` to or from `addr`. A payload too large for a
/// frame is not written (UDP datagrams fit: they are at most 65,507 bytes).
pub fn put_datagram(out: &mut Vec<u8>, addr: SocketAddr, payload: &[u8]) {
    let mut a = Vec::with_capacity(MAX_ADDRESS);
    put_address(&mut a, addr);
    let Ok(len) = u16::try_from(a.len() + payload.len()) else {
        return;
    };
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&a);
    out.extend_from_slice(payload);
}

/// Reads one datagram frame into `buf` (reused); returns its address and the payload's
/// range in `buf`.
pub async fn read_datagram(
    r: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
) -> Result<(SocketAddr, std::ops::Range<usize>), WireError> {
    let mut len = [0u8; 2];
    r.read_exact(&mut len).await?;
    let len = usize::from(u16::from_be_bytes(len));
    buf.resize(len, 0);
    r.read_exact(buf).await?;
    let (addr, payload) = take_address(buf)?;
    let start = len - payload.len();
    Ok((addr, start..len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_from_what_the_flags_take() {
        assert_eq!(
            "5000".parse::<Endpoint>().unwrap(),
            Endpoint::Vsock {
                cid: tokio_vsock::VMADDR_CID_ANY,
                port: 5000
            }
        );
        assert_eq!(
            "16:5000".parse::<Endpoint>().unwrap(),
            Endpoint::Vsock {
                cid: 16,
                port: 5000
            }
        );
        assert_eq!(
            "unix:/run/k.sock".parse::<Endpoint>().unwrap(),
            Endpoint::Unix("/run/k.sock".into())
        );
        for bad in ["", "unix:", "x", "1:y", "-1", "1:2:3", "99999999999"] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
        }
        assert_eq!("unix:/a".parse::<Endpoint>().unwrap().describe(), "unix:/a");
        assert_eq!("7".parse::<Endpoint>().unwrap().describe(), "7");
    }

    #[tokio::test]
    async fn datagrams_and_openings_round_trip_and_garbage_is_refused() {
        let addrs: [SocketAddr; 2] = [
            "203.0.113.7:4433".parse().unwrap(),
            "[2001:db8::1]:9".parse().unwrap(),
        ];
        let mut wire = Vec::new();
        for (i, a) in addrs.iter().enumerate() {
            put_datagram(&mut wire, *a, &vec![u8::try_from(i).unwrap(); 1200 * i]);
        }
        let mut r = wire.as_slice();
        let mut buf = Vec::new();
        for (i, a) in addrs.iter().enumerate() {
            let (got, range) = read_datagram(&mut r, &mut buf).await.unwrap();
            assert_eq!(got, *a);
            assert_eq!(buf[range].len(), 1200 * i);
        }
        assert!(read_datagram(&mut r, &mut buf).await.is_err());
        let o = opening(KIND_TCP, Some(addrs[1]));
        let mut r = o.as_slice();
        assert_eq!(read_opening(&mut r).await.unwrap(), KIND_TCP);
        assert_eq!(read_address(&mut r).await.unwrap(), addrs[1]);
        for junk in [&b"KSR2\x01"[..], b"KSR1\x09", b"KS", b""] {
            assert!(read_opening(&mut &junk[..]).await.is_err(), "{junk:?}");
        }
        for junk in [&[5u8, 1, 2, 3, 4, 0, 1][..], &[4, 1, 2], &[6; 10]] {
            assert!(read_address(&mut &junk[..]).await.is_err(), "{junk:?}");
            assert!(take_address(junk).is_err(), "{junk:?}");
        }
        // A frame whose length is shorter than its address.
        assert!(
            read_datagram(&mut &[0u8, 2, 4, 1][..], &mut buf)
                .await
                .is_err()
        );
    }
}
