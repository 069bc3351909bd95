//! A connection to a server: one link at a time, replaced when it is lost.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use keyserver_protocol::{Request, Response, suite::KsfParams};

use crate::{
    ClientError, RECONNECT_ATTEMPTS,
    link::{Connector, Link, LinkError},
};

#[derive(Debug)]
struct Inner {
    connector: Arc<dyn Connector>,
    ksf: KsfParams,
    /// The current link and its generation; `None` after it was lost.
    link: std::sync::Mutex<Option<(u64, Arc<dyn Link>)>>,
    generation: AtomicU64,
    /// Serialises reconnection so that many failing requests make one new connection.
    reconnect: tokio::sync::Mutex<()>,
}

/// A connection to a server, over QUIC, TLS over TCP or any [`Link`]. Clone it freely:
/// clones share it, and any number of sessions and concurrent requests run over it. When
/// the underlying connection is lost, the next request makes a new one (with bounded
/// retries and backoff) and sends itself again; sessions carry on without logging in again.
#[derive(Clone, Debug)]
pub struct Connection {
    inner: Arc<Inner>,
}

impl Connection {
    /// Connects and checks the server's certificate.
    #[cfg(feature = "native")]
    pub async fn connect(config: &crate::ClientConfig) -> Result<Self, ClientError> {
        Self::with_connector(Arc::new(config.clone()), config.ksf).await
    }

    /// Connects through `connector`; `ksf` are the key-stretching parameters of the
    /// account's password (see `ClientConfig::ksf`).
    pub async fn with_connector(
        connector: Arc<dyn Connector>,
        ksf: KsfParams,
    ) -> Result<Self, ClientError> {
        let inner = Inner {
            connector,
            ksf,
            link: std::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            reconnect: tokio::sync::Mutex::new(()),
        };
        let conn = Self {
            inner: Arc::new(inner),
        };
        conn.link().await?;
        Ok(conn)
    }

    fn current(&self) -> Option<(u64, Arc<dyn Link>)> {
        self.inner
            .link
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The live link, connecting if there is none.
    async fn link(&self) -> Result<(u64, Arc<dyn Link>), ClientError> {
        if let Some(l) = self.current() {
            return Ok(l);
        }
        let _one = self.inner.reconnect.lock().await;
        if let Some(l) = self.current() {
            return Ok(l);
        }
        let link = self.inner.connector.connect().await?;
        let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed) + 1;
        *self
            .inner
            .link
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((generation, link.clone()));
        Ok((generation, link))
    }

    /// Forgets link `generation` (if it is still the current one).
    fn lost(&self, generation: u64) {
        let mut link = self
            .inner
            .link
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if link.as_ref().is_some_and(|(g, _)| *g == generation)
            && let Some((_, l)) = link.take()
        {
            l.close();
        }
    }

    /// Sends one request; on a lost connection reconnects and sends the same bytes again.
    pub(crate) async fn call(&self, req: &Request) -> Result<Response, ClientError> {
        let bytes = req.encode();
        let mut attempt = 0;
        loop {
            let result = match self.link().await {
                Ok((generation, link)) => match link.call(&bytes).await {
                    Ok(resp) => return Self::decode(&resp),
                    Err(LinkError::Fatal(e)) => return Err(e),
                    Err(LinkError::Lost(why)) => {
                        self.lost(generation);
                        ClientError::Unreachable(why)
                    }
                },
                // A certificate, attestation or usage problem does not heal by retrying.
                Err(
                    e @ (ClientError::Tls(_)
                    | ClientError::NotAttested(_)
                    | ClientError::InvalidInput(_)),
                ) => return Err(e),
                Err(e) => e,
            };
            if attempt >= RECONNECT_ATTEMPTS {
                return Err(result);
            }
            crate::rt::sleep(Duration::from_millis(50) * 2u32.pow(attempt)).await;
            attempt += 1;
        }
    }

    /// Sends one request once: on a lost connection, the next request reconnects, but this
    /// one is not sent again. For requests that count a password guess (a login start), so
    /// that a flaky network never spends the user's guesses behind their back.
    pub(crate) async fn call_once(&self, req: &Request) -> Result<Response, ClientError> {
        let (generation, link) = self.link().await?;
        match link.call(&req.encode()).await {
            Ok(resp) => Self::decode(&resp),
            Err(LinkError::Fatal(e)) => Err(e),
            Err(LinkError::Lost(why)) => {
                self.lost(generation);
                Err(ClientError::Unreachable(format!(
                    "the connection was lost during a login step, which is not sent again \
                     (each attempt counts a password guess): {why}"
                )))
            }
        }
    }

    fn decode(bytes: &[u8]) -> Result<Response, ClientError> {
        match Response::decode(bytes).map_err(|_| ClientError::Protocol("undecodable response"))? {
            Response::Error(e) => Err(e.into()),
            r => Ok(r),
        }
    }

    pub(crate) fn ksf(&self) -> KsfParams {
        self.inner.ksf
    }

    /// Closes the connection and waits (at most a second) until the server knows. Call it
    /// before a process exits.
    pub async fn shutdown(&self) {
        let link = self.current();
        self.close();
        if let Some((_, l)) = link {
            l.close_and_wait().await;
        }
    }

    /// Closes the current underlying connection. The next request, if any, reconnects.
    pub fn close(&self) {
        if let Some((g, _)) = self.current() {
            self.lost(g);
        }
    }
}
