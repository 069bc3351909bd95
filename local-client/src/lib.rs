//! The keyserver client: register, log in, and run operations in a session.
//!
//! ```no_run
//! # async fn demo() -> Result<(), local_client::ClientError> {
//! use local_client::{ClientConfig, Connection};
//! use keyserver_protocol::{SecretBytes, SecretName, UserName};
//!
//! let config = ClientConfig::new("127.0.0.1:7443", "keyserver-data/ca.pem".as_ref())?;
//! let conn = Connection::connect(&config).await?;
//! let alice = UserName::new("alice").map_err(|e| local_client::ClientError::InvalidInput(e.to_string()))?;
//! let password = SecretBytes::new(b"correct horse battery staple".to_vec());
//! conn.register(&alice, &password).await?;
//! let session = conn.login(&alice, &password).await?;
//! let name = SecretName::new("wallet").map_err(|e| local_client::ClientError::InvalidInput(e.to_string()))?;
//! session.store(&name, &SecretBytes::new(b"seed words".to_vec()), false).await?;
//! let (secret, _version) = session.retrieve(&name).await?;
//! assert_eq!(secret.expose_secret(), b"seed words");
//! # Ok(()) }
//! ```
//!
//! The password never leaves this process: OPAQUE sends only blinded values. Secrets are
//! sealed here under a storage key that the server holds only sealed under a key derived
//! from the password, so the server sees ciphertext only.

pub mod connect;
pub mod error;
mod session;
pub mod tcp;

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

pub use error::ClientError;
use keyserver_protocol::{
    Request, Response, SecretBytes, UserName,
    codec::Bytes,
    handshake::{HandshakeError, login, registration},
    seal::StorageKey,
    session::ClientChannel,
    suite::KsfParams,
};
use rand::rngs::OsRng;
use rustls::pki_types::CertificateDer;
pub use session::{AuditReport, Session};

/// Which transport a connection uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// QUIC: one stream per request (the default).
    #[default]
    Quic,
    /// TLS 1.3 over TCP: framed requests with ids.
    Tcp,
}

impl std::str::FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "quic" => Ok(Self::Quic),
            "tcp" => Ok(Self::Tcp),
            other => Err(format!(
                "unknown transport {other:?} (expected quic or tcp)"
            )),
        }
    }
}

/// How many times a request is retried on a new connection after losing its own.
pub const RECONNECT_ATTEMPTS: u32 = 5;

/// How to reach and authenticate a server.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    server: String,
    server_name: String,
    ca: Vec<CertificateDer<'static>>,
    ksf: KsfParams,
    transport: Transport,
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
        })
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

fn handshake_error(e: HandshakeError) -> ClientError {
    match e {
        HandshakeError::AuthFailed => ClientError::AuthFailed,
        HandshakeError::Malformed => {
            ClientError::Protocol("malformed OPAQUE message from the server")
        }
        HandshakeError::BadKsfParams => {
            ClientError::InvalidInput("invalid key-stretching parameters".into())
        }
        HandshakeError::Internal => ClientError::Protocol("OPAQUE failure"),
    }
}

#[derive(Clone, Debug)]
enum Link {
    Quic(connect::QuicLink),
    Tcp(tcp::TcpLink),
}

impl Link {
    async fn call(&self, req: &[u8]) -> Result<Vec<u8>, connect::LinkError> {
        match self {
            Self::Quic(l) => l.call(req).await,
            Self::Tcp(l) => l.call(req).await,
        }
    }

    fn close(&self) {
        match self {
            Self::Quic(l) => l.close(),
            Self::Tcp(l) => l.close(),
        }
    }
}

#[derive(Debug)]
struct Inner {
    config: ClientConfig,
    /// The current link and its generation; `None` after it was lost.
    link: std::sync::Mutex<Option<(u64, Link)>>,
    generation: AtomicU64,
    /// Serialises reconnection so that many failing requests make one new connection.
    reconnect: tokio::sync::Mutex<()>,
}

/// A connection to a server, over QUIC or TLS over TCP. Clone it freely: clones share it,
/// and any number of sessions and concurrent requests run over it. When the underlying
/// connection is lost, the next request makes a new one (with bounded retries and backoff)
/// and sends itself again; sessions carry on without logging in again.
#[derive(Clone, Debug)]
pub struct Connection {
    inner: Arc<Inner>,
}

impl Connection {
    /// Connects and checks the server's certificate.
    pub async fn connect(config: &ClientConfig) -> Result<Self, ClientError> {
        let inner = Inner {
            config: config.clone(),
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

    async fn open_link(config: &ClientConfig) -> Result<Link, ClientError> {
        let addr = connect::resolve(&config.server).await?;
        let tls = connect::tls_config(&config.ca)?;
        Ok(match config.transport {
            Transport::Quic => {
                Link::Quic(connect::QuicLink::connect(addr, &config.server_name, tls).await?)
            }
            Transport::Tcp => {
                Link::Tcp(tcp::TcpLink::connect(addr, &config.server_name, tls).await?)
            }
        })
    }

    fn current(&self) -> Option<(u64, Link)> {
        self.inner
            .link
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The live link, connecting if there is none.
    async fn link(&self) -> Result<(u64, Link), ClientError> {
        if let Some(l) = self.current() {
            return Ok(l);
        }
        let _one = self.inner.reconnect.lock().await;
        if let Some(l) = self.current() {
            return Ok(l);
        }
        let link = Self::open_link(&self.inner.config).await?;
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
                    Err(connect::LinkError::Fatal(e)) => return Err(e),
                    Err(connect::LinkError::Lost(why)) => {
                        self.lost(generation);
                        ClientError::Unreachable(why)
                    }
                },
                // A certificate or usage problem does not heal by retrying.
                Err(e @ (ClientError::Tls(_) | ClientError::InvalidInput(_))) => return Err(e),
                Err(e) => e,
            };
            if attempt >= RECONNECT_ATTEMPTS {
                return Err(result);
            }
            tokio::time::sleep(Duration::from_millis(50) * 2u32.pow(attempt)).await;
            attempt += 1;
        }
    }

    fn decode(bytes: &[u8]) -> Result<Response, ClientError> {
        match Response::decode(bytes).map_err(|_| ClientError::Protocol("undecodable response"))? {
            Response::Error(e) => Err(e.into()),
            r => Ok(r),
        }
    }

    fn ksf(&self) -> KsfParams {
        self.inner.config.ksf
    }

    /// Registers `user` with `password`, and makes the account's storage key.
    pub async fn register(
        &self,
        user: &UserName,
        password: &SecretBytes,
    ) -> Result<(), ClientError> {
        let (flow, message) =
            registration::start(&mut OsRng, user, password).map_err(handshake_error)?;
        let Response::RegisterStarted { handshake, message } = self
            .call(&Request::RegisterStart {
                user: user.clone(),
                message,
            })
            .await?
        else {
            return Err(ClientError::Protocol("unexpected reply to RegisterStart"));
        };
        let ksf = self.ksf();
        let password = password.clone();
        let user2 = user.clone();
        // argon2 takes a while and much memory: off the async threads.
        let (upload, sealed) = tokio::task::spawn_blocking(move || {
            let fin = flow
                .finish(&mut OsRng, &password, message.as_slice(), ksf)
                .map_err(handshake_error)?;
            let storage_key = StorageKey::generate(&mut OsRng);
            let sealed = fin
                .master_key
                .seal_storage_key(&mut OsRng, &user2, &storage_key);
            Ok::<_, ClientError>((fin.upload, sealed))
        })
        .await
        .map_err(|_| ClientError::Protocol("registration task failed"))??;
        let sealed_storage_key =
            Bytes::new(sealed).ok_or(ClientError::Protocol("sealed storage key too large"))?;
        match self
            .call(&Request::RegisterFinish {
                handshake,
                upload,
                sealed_storage_key,
            })
            .await?
        {
            Response::Registered => Ok(()),
            _ => Err(ClientError::Protocol("unexpected reply to RegisterFinish")),
        }
    }

    /// Logs in as `user`; the session runs on this connection.
    pub async fn login(
        &self,
        user: &UserName,
        password: &SecretBytes,
    ) -> Result<Session, ClientError> {
        let (flow, message) = login::start(&mut OsRng, user, password).map_err(handshake_error)?;
        let Response::LoginStarted { handshake, message } = self
            .call(&Request::LoginStart {
                user: user.clone(),
                message,
            })
            .await?
        else {
            return Err(ClientError::Protocol("unexpected reply to LoginStart"));
        };
        let ksf = self.ksf();
        let pw = password.clone();
        let finished = tokio::task::spawn_blocking(move || {
            flow.finish(&mut OsRng, &pw, message.as_slice(), ksf)
        })
        .await
        .map_err(|_| ClientError::Protocol("login task failed"))?;
        let fin = match finished {
            Ok(f) => f,
            Err(e) => {
                // Tell the server now rather than at the handshake's expiry; best effort.
                let _ = self.call(&Request::LoginAbort { handshake }).await;
                return Err(handshake_error(e));
            }
        };
        let Response::LoggedIn {
            sealed_storage_key, ..
        } = self
            .call(&Request::LoginFinish {
                handshake,
                message: fin.message,
            })
            .await?
        else {
            return Err(ClientError::Protocol("unexpected reply to LoginFinish"));
        };
        let storage_key = fin
            .master_key
            .open_storage_key(user, sealed_storage_key.as_slice())
            .map_err(|_| {
                ClientError::Integrity("the sealed storage key from the server does not open")
            })?;
        Ok(Session::new(
            self.clone(),
            user.clone(),
            Arc::new(ClientChannel::new(&fin.session)),
            storage_key,
        ))
    }

    /// Closes the connection and waits (at most a second) until the server knows. Call it
    /// before a process exits.
    pub async fn shutdown(&self) {
        let link = self.current();
        self.close();
        if let Some((_, Link::Quic(q))) = link {
            q.close_and_wait().await;
        }
    }

    /// Closes the current underlying connection. The next request, if any, reconnects.
    pub fn close(&self) {
        if let Some((g, _)) = self.current() {
            self.lost(g);
        }
    }
}
