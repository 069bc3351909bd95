//! Connecting to a server over QUIC with TLS 1.3, checking its certificate against a given
//! CA (never "accept anything").

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use keyserver_protocol::{ALPN, limits::MAX_MESSAGE};
use quinn::crypto::rustls::QuicClientConfig;
use rustls::{RootCertStore, pki_types::CertificateDer};

use async_trait::async_trait;

pub use crate::link::LinkError;
use crate::{ClientError, link::Link};

/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest CA file read.
const MAX_CA_FILE: u64 = 1024 * 1024;

/// Reads PEM certificates from `path`.
pub fn load_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    use std::io::Read;
    let shown = path.display();
    let f = std::fs::File::open(path)
        .map_err(|e| ClientError::InvalidInput(format!("cannot read the CA file {shown}: {e}")))?;
    let mut pem = Vec::new();
    f.take(MAX_CA_FILE + 1)
        .read_to_end(&mut pem)
        .map_err(|e| ClientError::InvalidInput(format!("cannot read the CA file {shown}: {e}")))?;
    if pem.len() as u64 > MAX_CA_FILE {
        return Err(ClientError::InvalidInput(format!(
            "the CA file {shown} is too large"
        )));
    }
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClientError::InvalidInput(format!("the CA file {shown} is not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(ClientError::InvalidInput(format!(
            "the CA file {shown} holds no certificate"
        )));
    }
    Ok(certs)
}

/// The client's TLS configuration: TLS 1.3, our ALPN, only the given CA as root.
pub fn tls_config(ca: &[CertificateDer<'static>]) -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = RootCertStore::empty();
    for c in ca {
        roots
            .add(c.clone())
            .map_err(|e| ClientError::InvalidInput(format!("unusable CA certificate: {e}")))?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .map_err(|e| ClientError::InvalidInput(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// The client's TLS configuration for an attested server: TLS 1.3, our ALPN, no CA: the
/// certificate is held to the attestation instead (`crate::attestation`).
pub fn tls_config_attested() -> Result<rustls::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ClientError::InvalidInput(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(crate::attestation::AttestedServer(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// Resolves `host:port`.
pub async fn resolve(server: &str) -> Result<SocketAddr, ClientError> {
    tokio::net::lookup_host(server)
        .await
        .map_err(|e| ClientError::Unreachable(format!("cannot resolve {server}: {e}")))?
        .next()
        .ok_or_else(|| ClientError::Unreachable(format!("{server} resolves to no address")))
}

/// One QUIC connection to a server. Cheap to clone; every clone shares the connection.
#[derive(Clone, Debug)]
pub struct QuicLink {
    conn: quinn::Connection,
    // Keeps the endpoint (the UDP socket) alive as long as any clone of the connection.
    endpoint: quinn::Endpoint,
}

impl QuicLink {
    /// Connects to `addr`, checking that the certificate names `server_name`.
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        tls: rustls::ClientConfig,
    ) -> Result<Self, ClientError> {
        let bind: SocketAddr = if addr.is_ipv6() {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        }
        .parse()
        .map_err(|_| ClientError::Protocol("bad bind address"))?;
        Self::connect_from(bind, addr, server_name, tls).await
    }

    /// As [`Self::connect`], from a given local address.
    pub async fn connect_from(
        bind: SocketAddr,
        addr: SocketAddr,
        server_name: &str,
        tls: rustls::ClientConfig,
    ) -> Result<Self, ClientError> {
        let crypto =
            QuicClientConfig::try_from(tls).map_err(|e| ClientError::Tls(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        // A server that vanished is noticed within the idle timeout; keep-alives keep a
        // healthy but quiet connection open.
        transport.keep_alive_interval(Some(Duration::from_secs(3)));
        transport.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
            10_000,
        ))));
        config.transport_config(Arc::new(transport));
        let mut endpoint =
            quinn::Endpoint::client(bind).map_err(|e| ClientError::Unreachable(e.to_string()))?;
        endpoint.set_default_client_config(config);
        let connecting = endpoint
            .connect(addr, server_name)
            .map_err(|e| ClientError::InvalidInput(format!("cannot connect: {e}")))?;
        let conn = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Err(_) => {
                return Err(ClientError::Unreachable(format!(
                    "no answer from {addr} within {CONNECT_TIMEOUT:?}"
                )));
            }
            Ok(Err(e)) => return Err(classify(e)),
            Ok(Ok(c)) => c,
        };
        Ok(Self { conn, endpoint })
    }

    /// Sends one request on its own stream and reads its response.
    pub async fn call(&self, req: &[u8]) -> Result<Vec<u8>, LinkError> {
        let exchange = async {
            let (mut send, mut recv) = self
                .conn
                .open_bi()
                .await
                .map_err(|e| LinkError::Lost(e.to_string()))?;
            send.write_all(req)
                .await
                .map_err(|e| LinkError::Lost(e.to_string()))?;
            send.finish().map_err(|e| LinkError::Lost(e.to_string()))?;
            recv.read_to_end(MAX_MESSAGE).await.map_err(|e| match e {
                quinn::ReadToEndError::TooLong => {
                    LinkError::Fatal(ClientError::Protocol("response too large"))
                }
                quinn::ReadToEndError::Read(e) => LinkError::Lost(e.to_string()),
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| LinkError::Lost(format!("no response within {REQUEST_TIMEOUT:?}")))?
    }

    /// Whether the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some()
    }
}

#[async_trait]
impl Link for QuicLink {
    async fn call(&self, request: &[u8]) -> Result<Vec<u8>, LinkError> {
        Self::call(self, request).await
    }

    fn close(&self) {
        self.conn.close(quinn::VarInt::from_u32(0), b"bye");
    }

    fn peer_certificate(&self) -> Option<Vec<u8>> {
        let certs = self
            .conn
            .peer_identity()?
            .downcast::<Vec<CertificateDer<'static>>>()
            .ok()?;
        certs.first().map(|c| c.to_vec())
    }

    async fn close_and_wait(&self) {
        Link::close(self);
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

fn classify(e: quinn::ConnectionError) -> ClientError {
    // TLS alerts travel as QUIC transport errors 0x100 + alert (RFC 9001, section 4.8).
    let is_tls = |code: quinn::TransportErrorCode| (0x100..0x200).contains(&u64::from(code));
    match e {
        quinn::ConnectionError::TransportError(t) if is_tls(t.code) => {
            ClientError::Tls(t.to_string())
        }
        quinn::ConnectionError::ConnectionClosed(c) if is_tls(c.error_code) => {
            ClientError::Tls(c.to_string())
        }
        other => ClientError::Unreachable(other.to_string()),
    }
}
