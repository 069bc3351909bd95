//! TLS configuration shared by the transports: TLS 1.3 only, ALPN `keyserver/3` required,
//! ring as the only crypto provider.

use std::sync::Arc;

use keyserver_protocol::ALPN;
use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer},
};

/// The TLS configuration could not be built (bad certificate or key).
#[derive(Debug, thiserror::Error)]
#[error("invalid TLS configuration: {0}")]
pub struct TlsConfigError(pub(crate) String);

/// The one crypto provider of the process.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server config: TLS 1.3 only, our ALPN only, the given certificate.
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, TlsConfigError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsConfigError(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsConfigError(e.to_string()))?;
    // A client offering no ALPN, or only others, is refused with `no_application_protocol`.
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}
