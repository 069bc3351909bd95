//! The in-process test pair: the server's [`Core`] over a scratch database with a clock
//! the test moves, and clients that talk to it directly, with no process, no socket and a
//! cheap key-stretching function (the server never runs it; only the client does).

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use keyserver::{
    clock::{ManualClock, Now},
    config::Config,
    service::Core,
    storage::{
        Backend, Durability, Job, Storage, StorageError, postgres::PostgresBackend,
        sqlite::SqliteBackend,
    },
};
use keyserver_protocol::{
    ErrorCode, OpRequest, OpResponse, Request, Response, SealedRequest, SecretBytes, SecretName,
    ServerSetup, UserName,
    codec::Bytes,
    handshake::{login, registration},
    seal::{MasterKey, StorageKey},
    server_keys::ServerKeys,
    session::ClientChannel,
    suite::KsfParams,
};
use local_client::{ClientError, Connection, Connector, Link, LinkError, Session};
use rand::rngs::OsRng;

/// The key-stretching parameters of every test account.
pub const KSF: KsfParams = KsfParams::INSECURE_TEST_ONLY;

/// Where the test starts in time.
pub const START: Now = Now::from_unix_secs(1_750_000_000);

/// Which database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// A scratch database, dropped with the test.
pub enum Scratch {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres(keyserver_tests::PgSchema),
}

/// A backend that counts the transactions it runs (to show what a request costs).
#[derive(Debug)]
pub struct Counting {
    inner: Arc<dyn Backend>,
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    /// Write transactions running now, and the most ever at once.
    pub in_flight: AtomicU64,
    pub most_in_flight: AtomicU64,
}

#[async_trait]
impl Backend for Counting {
    async fn write(&self, durability: Durability, job: Job) -> Result<(), StorageError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        let r = self.inner.write(durability, job).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        r
    }

    async fn read(&self, job: Job) -> Result<(), StorageError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.read(job).await
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn jobs_per_account(&self) -> Option<usize> {
        self.inner.jobs_per_account()
    }
}

/// The server side of the pair: storage and the OPAQUE setup, from which any number of
/// instances (cores) can be made, as a fleet shares a database and a setup.
pub struct Server {
    pub storage: Storage,
    pub counts: Arc<Counting>,
    pub setup: ServerSetup,
    pub clock: Arc<ManualClock>,
    pub core: Arc<Core>,
    pub config: Config,
    scratch: Scratch,
}

impl Server {
    /// A fresh database of `kind` (`None`, after a loud `SKIPPED`, for Postgres without
    /// `KEYSERVER_TEST_DATABASE_URL`), and one instance on it.
    pub async fn new(kind: Kind, config: Config) -> Option<Self> {
        let (backend, scratch): (Arc<dyn Backend>, _) = match kind {
            Kind::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let b = SqliteBackend::open(&dir.path().join("keyserver.db"))
                    .await
                    .unwrap();
                (Arc::new(b), Scratch::Sqlite(dir))
            }
            Kind::Postgres => {
                let schema = keyserver_tests::PgSchema::create()?;
                let b = PostgresBackend::connect(&schema.url()).await.unwrap();
                (Arc::new(b), Scratch::Postgres(schema))
            }
        };
        let counts = Arc::new(Counting {
            inner: backend,
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            most_in_flight: AtomicU64::new(0),
        });
        let storage = Storage::new(counts.clone());
        let setup = ServerSetup::new(&mut OsRng);
        let clock = Arc::new(ManualClock::new(START));
        let core = Arc::new(Core::new(
            config.clone(),
            storage.clone(),
            ServerSetup::deserialize(&setup.serialize()).unwrap(),
            ServerKeys::derive(&setup),
            clock.clone(),
        ));
        Some(Self {
            storage,
            counts,
            setup,
            clock,
            core,
            config,
            scratch,
        })
    }

    /// Another instance on the same database, setup and clock (a fleet member, or this
    /// instance after a restart: it holds nothing in memory).
    pub fn instance(&self) -> Arc<Core> {
        Arc::new(Core::new(
            self.config.clone(),
            self.storage.clone(),
            ServerSetup::deserialize(&self.setup.serialize()).unwrap(),
            ServerKeys::derive(&self.setup),
            self.clock.clone(),
        ))
    }

    /// Another instance on the same database that answers attestation requests with
    /// `attester`'s documents.
    pub fn attested_instance(&self, attester: Arc<keyserver::attestation::Attester>) -> Arc<Core> {
        Arc::new(
            Core::new(
                self.config.clone(),
                self.storage.clone(),
                ServerSetup::deserialize(&self.setup.serialize()).unwrap(),
                ServerKeys::derive(&self.setup),
                self.clock.clone(),
            )
            .with_attester(attester),
        )
    }

    /// Another instance with its own connections to the same database (Postgres: its own
    /// pools, as a separate process would have).
    pub async fn separate_instance(&self) -> Arc<Core> {
        let storage = match &self.scratch {
            Scratch::Postgres(schema) => Storage::new(Arc::new(
                PostgresBackend::connect(&schema.url()).await.unwrap(),
            )),
            Scratch::Sqlite(_) => self.storage.clone(),
        };
        Arc::new(Core::new(
            self.config.clone(),
            storage,
            ServerSetup::deserialize(&self.setup.serialize()).unwrap(),
            ServerKeys::derive(&self.setup),
            self.clock.clone(),
        ))
    }

    /// Transactions run so far: (reads, writes).
    pub fn transactions(&self) -> (u64, u64) {
        (
            self.counts.reads.load(Ordering::Relaxed),
            self.counts.writes.load(Ordering::Relaxed),
        )
    }

    /// Runs SQL on the scratch database directly, as an operator (or an attacker with the
    /// database) would: `sqlite` for SQLite, `postgres` for Postgres.
    pub async fn sql(&self, sqlite: &str, postgres: &str) {
        match &self.scratch {
            Scratch::Sqlite(dir) => {
                use sqlx::Connection;
                let url = format!("sqlite://{}", dir.path().join("keyserver.db").display());
                let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::query(sqlite).execute(&mut c).await.unwrap();
            }
            Scratch::Postgres(schema) => {
                use sqlx::Connection;
                let mut c = sqlx::PgConnection::connect(&schema.url()).await.unwrap();
                sqlx::query(postgres).execute(&mut c).await.unwrap();
            }
        }
    }

    /// The scratch database's URL, on Postgres.
    pub fn postgres_url(&self) -> Option<String> {
        match &self.scratch {
            Scratch::Postgres(schema) => Some(schema.url()),
            Scratch::Sqlite(_) => None,
        }
    }

    /// One number from the scratch database, read directly (the same SQL on both).
    pub async fn count(&self, sql: &str) -> i64 {
        use sqlx::Connection;
        match &self.scratch {
            Scratch::Sqlite(dir) => {
                let url = format!("sqlite://{}", dir.path().join("keyserver.db").display());
                let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
            }
            Scratch::Postgres(schema) => {
                let mut c = sqlx::PgConnection::connect(&schema.url()).await.unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
            }
        }
    }

    /// The hash of the one account's audit event `seq`, read directly.
    pub async fn count_hash(&self, seq: u64) -> [u8; 32] {
        use sqlx::Connection;
        let sql = format!("SELECT hash FROM audit_events WHERE seq = {seq}");
        let h: Vec<u8> = match &self.scratch {
            Scratch::Sqlite(dir) => {
                let url = format!("sqlite://{}", dir.path().join("keyserver.db").display());
                let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::query_scalar(&sql).fetch_one(&mut c).await.unwrap()
            }
            Scratch::Postgres(schema) => {
                let mut c = sqlx::PgConnection::connect(&schema.url()).await.unwrap();
                sqlx::query_scalar(&sql).fetch_one(&mut c).await.unwrap()
            }
        };
        h.try_into().unwrap()
    }

    /// Moves time forward.
    pub fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }

    /// A client connection to the first instance, from 127.0.0.1.
    pub async fn connect(&self) -> Connection {
        connect(&self.core, LOCALHOST).await
    }

    /// A raw protocol client of the first instance.
    pub fn raw(&self) -> Raw {
        Raw::new(&self.core, LOCALHOST)
    }

    /// Registers `user` with `password` through the client library.
    pub async fn register(&self, user: &str, password: &str) {
        self.connect()
            .await
            .register(&name_of(user), &pw(password))
            .await
            .unwrap();
    }

    /// Logs in through the client library.
    pub async fn login(&self, user: &str, password: &str) -> Result<Session, ClientError> {
        self.connect()
            .await
            .login(&name_of(user), &pw(password))
            .await
    }
}

pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A client connection to `core` from `peer`.
pub async fn connect(core: &Arc<Core>, peer: IpAddr) -> Connection {
    let link = InProcess {
        core: core.clone(),
        peer,
    };
    Connection::with_connector(Arc::new(link), KSF)
        .await
        .unwrap()
}

/// A link that hands requests to a core in this process.
#[derive(Clone, Debug)]
pub struct InProcess {
    core: Arc<Core>,
    peer: IpAddr,
}

#[async_trait]
impl Link for InProcess {
    async fn call(&self, request: &[u8]) -> Result<Vec<u8>, LinkError> {
        Ok(self.core.handle(request, self.peer).await)
    }

    fn close(&self) {}
}

#[async_trait]
impl Connector for InProcess {
    async fn connect(&self) -> Result<Arc<dyn Link>, ClientError> {
        Ok(Arc::new(self.clone()))
    }
}

pub fn name_of(s: &str) -> UserName {
    UserName::new(s).unwrap()
}

pub fn secret(s: &str) -> SecretName {
    SecretName::new(s).unwrap()
}

pub fn pw(s: &str) -> SecretBytes {
    SecretBytes::new(s.as_bytes().to_vec())
}

/// A client speaking the protocol by hand, for what the client library would never send:
/// the same sealed bytes twice, a forged seal, a login left half done.
#[derive(Clone)]
pub struct Raw {
    core: Arc<Core>,
    peer: IpAddr,
}

impl Raw {
    pub fn new(core: &Arc<Core>, peer: IpAddr) -> Self {
        Self {
            core: core.clone(),
            peer,
        }
    }

    /// Sends one request.
    pub async fn send(&self, r: &Request) -> Response {
        self.send_bytes(&r.encode()).await
    }

    /// Sends raw bytes.
    pub async fn send_bytes(&self, b: &[u8]) -> Response {
        Response::decode(&self.core.handle(b, self.peer).await).unwrap()
    }

    /// `LoginStart` only: the reply, and the client's state to finish with.
    pub async fn login_start(
        &self,
        user: &str,
        password: &str,
    ) -> Result<(login::LoginFlow, keyserver_protocol::HandshakeId, Vec<u8>), ErrorCode> {
        let (flow, message) = login::start(&mut OsRng, &name_of(user), &pw(password)).unwrap();
        match self
            .send(&Request::LoginStart {
                user: name_of(user),
                message,
            })
            .await
        {
            Response::LoginStarted { handshake, message } => {
                Ok((flow, handshake, message.into_vec()))
            }
            Response::Error(e) => Err(e.code),
            other => panic!("unexpected reply to LoginStart: {other:?}"),
        }
    }

    /// A whole login.
    pub async fn login(&self, user: &str, password: &str) -> Result<RawSession, ErrorCode> {
        let (flow, handshake, ke2) = self.login_start(user, password).await?;
        let fin = flow
            .finish(&mut OsRng, &pw(password), &ke2, KSF)
            .map_err(|_| ErrorCode::AUTH_FAILED)?;
        match self
            .send(&Request::LoginFinish {
                handshake,
                message: fin.message,
            })
            .await
        {
            Response::LoggedIn {
                sealed_storage_key,
                epoch,
                ..
            } => {
                let storage_key = fin
                    .master_key
                    .open_storage_key(&name_of(user), epoch, sealed_storage_key.as_slice())
                    .unwrap();
                Ok(RawSession {
                    raw: self.clone(),
                    channel: Arc::new(ClientChannel::new(fin.session).unwrap()),
                    storage_key,
                    master_key: Arc::new(fin.master_key),
                    user: name_of(user),
                    epoch,
                    password: password.to_string(),
                })
            }
            Response::Error(e) => Err(e.code),
            other => panic!("unexpected reply to LoginFinish: {other:?}"),
        }
    }

    /// A whole registration.
    pub async fn register(&self, user: &str, password: &str) -> Result<(), ErrorCode> {
        let (flow, message) =
            registration::start(&mut OsRng, &name_of(user), &pw(password)).unwrap();
        let (handshake, reply) = match self
            .send(&Request::RegisterStart {
                user: name_of(user),
                message,
            })
            .await
        {
            Response::RegisterStarted { handshake, message } => (handshake, message),
            Response::Error(e) => return Err(e.code),
            other => panic!("unexpected reply to RegisterStart: {other:?}"),
        };
        let fin = flow
            .finish(&mut OsRng, &pw(password), reply.as_slice(), KSF)
            .unwrap();
        let sealed = fin.master_key.seal_storage_key(
            &mut OsRng,
            &name_of(user),
            1,
            &StorageKey::generate(&mut OsRng),
        );
        match self
            .send(&Request::RegisterFinish {
                handshake,
                upload: fin.upload,
                sealed_storage_key: Bytes::new(sealed).unwrap(),
            })
            .await
        {
            Response::Registered => Ok(()),
            Response::Error(e) => Err(e.code),
            other => panic!("unexpected reply to RegisterFinish: {other:?}"),
        }
    }
}

/// A session driven by hand.
#[derive(Clone)]
pub struct RawSession {
    pub raw: Raw,
    pub channel: Arc<ClientChannel>,
    pub storage_key: StorageKey,
    pub master_key: Arc<MasterKey>,
    pub user: UserName,
    pub epoch: u64,
    pub password: String,
}

impl RawSession {
    /// Seals `op` as the next request.
    pub fn seal(&self, op: &OpRequest) -> SealedRequest {
        self.channel.seal_request(&op.encode()).unwrap()
    }

    /// Sends a sealed request; the opened answer, or the envelope's error code.
    pub async fn send(&self, req: &SealedRequest) -> Result<OpResponse, ErrorCode> {
        self.send_for_answer(req).await.map(|a| a.response)
    }

    /// Sends a sealed request; the opened answer with its audit position.
    pub async fn send_for_answer(
        &self,
        req: &SealedRequest,
    ) -> Result<keyserver_protocol::ops::OpAnswer, ErrorCode> {
        match self.raw.send(&Request::Sealed(req.clone())).await {
            Response::Sealed(resp) => {
                let plain = self.channel.open_response(req.seq, &resp).unwrap();
                Ok(keyserver_protocol::ops::OpAnswer::decode(&plain).unwrap())
            }
            Response::Error(e) => Err(e.code),
            other => panic!("unexpected reply to a sealed request: {other:?}"),
        }
    }

    /// Seals and sends `op`.
    pub async fn op(&self, op: &OpRequest) -> Result<OpResponse, ErrorCode> {
        self.send(&self.seal(op)).await
    }

    /// Proves the password again (a reauth), with the login's password.
    pub async fn reauth(&self) -> Result<(), ErrorCode> {
        let password = self.password.clone();
        let (flow, message) = login::start(&mut OsRng, &self.user, &pw(&password)).unwrap();
        let started = match self
            .op(&OpRequest::ReauthStart(
                keyserver_protocol::ops::ReauthStart { message },
            ))
            .await?
        {
            OpResponse::ReauthStarted(s) => s,
            OpResponse::Error(e) => return Err(e.code),
            other => panic!("unexpected reply to ReauthStart: {other:?}"),
        };
        let fin = flow
            .finish(&mut OsRng, &pw(&password), started.message.as_slice(), KSF)
            .map_err(|_| ErrorCode::AUTH_FAILED)?;
        match self
            .op(&OpRequest::ReauthFinish(
                keyserver_protocol::ops::ReauthFinish {
                    handshake: started.handshake,
                    message: fin.message,
                },
            ))
            .await?
        {
            OpResponse::Reauthenticated(_) => Ok(()),
            OpResponse::Error(e) => Err(e.code),
            other => panic!("unexpected reply to ReauthFinish: {other:?}"),
        }
    }

    /// Seals `data` as secret `name`, version `version`.
    /// The tag the server knows `name` by.
    pub fn tag(&self, name: &str) -> keyserver_protocol::NameTag {
        self.storage_key.name_tag(&secret(name))
    }

    /// `name` sealed for the server.
    pub fn sealed_name(&self, name: &str) -> keyserver_protocol::names::SealedName {
        Bytes::new(
            self.storage_key
                .seal_name(&mut OsRng, &self.user, &secret(name)),
        )
        .unwrap()
    }

    /// A store of `data` as version `version` of `name`.
    pub fn store_op(&self, name: &str, version: u64, data: &[u8], replace: bool) -> OpRequest {
        OpRequest::Store(keyserver_protocol::ops::Store {
            tag: self.tag(name),
            sealed_name: self.sealed_name(name),
            version,
            replace,
            sealed: self.sealed(name, version, data),
        })
    }

    /// A retrieve of `name`.
    pub fn retrieve_op(&self, name: &str) -> OpRequest {
        OpRequest::Retrieve(keyserver_protocol::ops::Retrieve {
            tag: self.tag(name),
        })
    }

    /// A delete of `name`.
    pub fn delete_op(&self, name: &str) -> OpRequest {
        OpRequest::Delete(keyserver_protocol::ops::Delete {
            tag: self.tag(name),
        })
    }

    /// `name` (at `version`, holding `data`, or deleted) staged for a rotation to `new_key`.
    pub fn staged(
        &self,
        new_key: &StorageKey,
        name: &str,
        version: u64,
        data: Option<&[u8]>,
    ) -> keyserver_protocol::ops::StagedSecret {
        let n = secret(name);
        keyserver_protocol::ops::StagedSecret {
            tag: self.tag(name),
            new_tag: new_key.name_tag(&n),
            sealed_name: Bytes::new(new_key.seal_name(&mut OsRng, &self.user, &n)).unwrap(),
            version,
            sealed: data.map(|d| {
                Bytes::new(
                    new_key
                        .seal_secret(
                            &mut OsRng,
                            &self.user,
                            &n,
                            version,
                            &SecretBytes::new(d.to_vec()),
                        )
                        .unwrap(),
                )
                .unwrap()
            }),
        }
    }

    pub fn sealed(
        &self,
        name: &str,
        version: u64,
        data: &[u8],
    ) -> keyserver_protocol::ops::SealedSecret {
        Bytes::new(
            self.storage_key
                .seal_secret(
                    &mut OsRng,
                    &self.user,
                    &secret(name),
                    version,
                    &SecretBytes::new(data.to_vec()),
                )
                .unwrap(),
        )
        .unwrap()
    }
}

/// Defines a test once, as a module with one test per backend: `sqlite` always, `postgres`
/// when `KEYSERVER_TEST_DATABASE_URL` is set (a loud `SKIPPED` otherwise).
#[macro_export]
macro_rules! on_every_backend {
    ($(#[$meta:meta])* async fn $name:ident($kind:ident: Kind) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn body($kind: $crate::harness::Kind) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                body($crate::harness::Kind::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                body($crate::harness::Kind::Postgres).await;
            }
        }
    };
}

/// The first page of the live secrets.
pub fn list_op() -> OpRequest {
    OpRequest::List(keyserver_protocol::ops::List {
        after: None,
        deleted: false,
    })
}
