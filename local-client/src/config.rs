//! How to reach and authenticate a server over QUIC or TLS over TCP.

use std::{path::Path, sync::Arc};

use async_trait::async_trait;
use keyserver_protocol::suite::KsfParams;
use rustls::pki_types::CertificateDer;

use crate::{
    ClientError, Transport, connect,
    link::{Connector, Link},
    tcp,
};

/// How to reach and authenticate a server.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub(crate) server: String,
    pub(crate) server_name: String,
    pub(crate) ca: Vec<CertificateDer<'static>>,
    pub(crate) ksf: KsfParams,
    pub(crate) transport: Transport,
    pub(crate) attestation: Option<crate::attestation::Policy>,
}

impl ClientConfig {
    /// A server at `server` (`host:port`) whose certificate must chain to the CA in `ca`.
    /// The certificate must name `localhost` unless [`Self::server_name`] says otherwise.
    pub fn new(server: &str, ca: &Path) -> Result<Self, ClientError> {
        Ok(Self {
            server: server.to_string(),
            server_name: "localhost".into(),
            ca: connect::load_ca(ca)?,
            ksf: KsfParams::default(),
            transport: Transport::default(),
            attestation: None,
        })
    }

    /// A server at `server` that must prove, on every connection and before anything else
    /// is sent, that it runs in an enclave `policy` accepts, with the TLS key of that
    /// connection (see [`crate::attestation`]). Its certificate needs no CA.
    pub fn attested(server: &str, policy: crate::attestation::Policy) -> Self {
        Self {
            server: server.to_string(),
            server_name: "localhost".into(),
            ca: Vec::new(),
            ksf: KsfParams::default(),
            transport: Transport::default(),
            attestation: Some(policy),
        }
    }

    /// The name the server's certificate must carry. Default `localhost`.
    pub fn server_name(&mut self, name: &str) -> &mut Self {
        self.server_name = name.to_string();
        self
    }

    /// The transport. Default QUIC.
    pub fn transport(&mut self, transport: Transport) -> &mut Self {
        self.transport = transport;
        self
    }

    /// The key-stretching parameters. Default: RFC 9106's second recommendation. They
    /// must be the same at registration and at every login; a mismatch looks exactly like
    /// a wrong password. Change them only for tests and benchmarks.
    pub fn ksf(&mut self, ksf: KsfParams) -> &mut Self {
        self.ksf = ksf;
        self
    }
}

#[async_trait]
impl Connector for ClientConfig {
    async fn connect(&self) -> Result<Arc<dyn Link>, ClientError> {
        let addr = connect::resolve(&self.server).await?;
        let tls = match &self.attestation {
            Some(_) => connect::tls_config_attested()?,
            None => connect::tls_config(&self.ca)?,
        };
        let link: Arc<dyn Link> = match self.transport {
            Transport::Quic => {
                Arc::new(connect::QuicLink::connect(addr, &self.server_name, tls).await?)
            }
            Transport::Tcp => Arc::new(tcp::TcpLink::connect(addr, &self.server_name, tls).await?),
        };
        if let Some(policy) = &self.attestation
            && let Err(e) = crate::attestation::check(link.as_ref(), policy).await
        {
            link.close();
            return Err(e);
        }
        Ok(link)
    }
}
