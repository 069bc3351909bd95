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

use std::{path::Path, sync::Arc};

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

/// How to reach and authenticate a server.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    server: String,
    server_name: String,
    ca: Vec<CertificateDer<'static>>,
    ksf: KsfParams,
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
        })
    }

    /// The name the server's certificate must carry. Default `localhost`.
    pub fn server_name(&mut self, name: &str) -> &mut Self {
        self.server_name = name.to_string();
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

/// A connection to a server. Any number of sessions may share it.
#[derive(Clone, Debug)]
pub struct Connection {
    quic: connect::QuicConnection,
    ksf: KsfParams,
}

impl Connection {
    /// Connects and checks the server's certificate.
    pub async fn connect(config: &ClientConfig) -> Result<Self, ClientError> {
        let addr = connect::resolve(&config.server).await?;
        let tls = connect::tls_config(&config.ca)?;
        let quic = connect::QuicConnection::connect(addr, &config.server_name, tls).await?;
        Ok(Self {
            quic,
            ksf: config.ksf,
        })
    }

    pub(crate) async fn call(&self, req: &Request) -> Result<Response, ClientError> {
        match self.quic.call(req).await? {
            Response::Error(e) => Err(e.into()),
            r => Ok(r),
        }
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
        let ksf = self.ksf;
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
        let ksf = self.ksf;
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

    /// Closes the connection.
    pub fn close(&self) {
        self.quic.close();
    }
}
