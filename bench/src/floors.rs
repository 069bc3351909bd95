//! The floors: the bare building blocks, measured in the same run as the server.
//!
//! - OPAQUE: opaque-ke's `ServerLogin::start` + `finish` (and the client's two steps) in a
//!   loop, with the protocol's suite, context and identifiers;
//! - transports: an echo server in its own process (the same certificate, TLS and QUIC
//!   settings as the keyserver), answering each request with its own bytes: QUIC one
//!   stream per request, TCP + TLS 1.3 the same frames copied back;
//! - handshakes: a QUIC connection, a TCP connection with its TLS 1.3 handshake;
//! - storage: one `INSERT` and its commit, alone, on SQLite (WAL, `synchronous = FULL`, as
//!   the server) and on Postgres.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use keyserver_protocol::{
    SecretBytes, UserName,
    handshake::registration,
    limits::MAX_MESSAGE,
    suite::{KsfParams, LOGIN_CONTEXT, Suite, identifiers},
};
use local_client::Link;
use opaque_ke::{
    ClientLogin, ClientLoginFinishParameters, ServerLogin, ServerLoginParameters,
    ServerRegistration, ServerSetup,
};
use rand::rngs::OsRng;

use crate::percentile;

/// What one OPAQUE login costs, bare.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpaqueFloor {
    /// Median server CPU per login (`ServerLogin::start` + `finish`), µs.
    pub(crate) server_us: f64,
    /// Median of a whole login, client and server steps one after the other, µs.
    pub(crate) whole_us: f64,
}

/// Signatures per second of the bare crate on one core, for `secs`: `ed25519-dalek`'s
/// `SigningKey::sign`, or `k256`'s RFC 6979 signature of the message's SHA-256, with the key
/// made once (the server opens and expands the key at every request: that is part of what
/// the ratio shows).
pub(crate) fn signing_floor(
    algorithm: keyserver_protocol::signing::Algorithm,
    message: &[u8],
    secs: f64,
) -> f64 {
    use keyserver_protocol::signing::Algorithm;
    let ed = ed25519_dalek::SigningKey::from_bytes(&rand::random());
    let k1 = k256::ecdsa::SigningKey::random(&mut OsRng);
    let sign = || match algorithm {
        Algorithm::Ed25519 => {
            use ed25519_dalek::Signer;
            std::hint::black_box(ed.sign(std::hint::black_box(message)));
        }
        Algorithm::Secp256k1 => {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(std::hint::black_box(message));
            std::hint::black_box(k1.sign_prehash_recoverable(&digest).ok());
        }
    };
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        for _ in 0..64 {
            sign();
        }
        n += 64;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Runs `n` logins of one registered user in a loop, timing each step.
pub(crate) fn opaque_floor(n: usize) -> anyhow::Result<OpaqueFloor> {
    let mut rng = OsRng;
    let setup = ServerSetup::<Suite>::new(&mut rng);
    let user = UserName::new("floor")?;
    let pw = SecretBytes::new(b"benchmark".to_vec());
    let ksf = KsfParams::INSECURE_TEST_ONLY;
    let (flow, req) = registration::start(&mut rng, &user, &pw)?;
    // The credential identifier is the server's choice; any value costs the same.
    let credential_id = [7u8; 32];
    let resp = registration::respond(&setup, &credential_id, req.as_slice())?;
    let done = flow.finish(&mut rng, &pw, resp.as_slice(), ksf)?;
    let record =
        ServerRegistration::<Suite>::deserialize(&registration::record(done.upload.as_slice())?)?;
    let argon = ksf.argon2().map_err(|e| anyhow::anyhow!("{e}"))?;
    let params = || ServerLoginParameters {
        context: Some(LOGIN_CONTEXT),
        identifiers: identifiers(&user),
    };
    let mut server = Vec::with_capacity(n);
    let mut whole = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        let c1 = ClientLogin::<Suite>::start(&mut rng, pw.expose_secret())?;
        let t1 = Instant::now();
        let s1 = ServerLogin::start(
            &mut rng,
            &setup,
            Some(record.clone()),
            c1.message,
            &credential_id,
            params(),
        )?;
        let t2 = Instant::now();
        let c2 = c1.state.finish(
            &mut rng,
            pw.expose_secret(),
            s1.message,
            ClientLoginFinishParameters::new(Some(LOGIN_CONTEXT), identifiers(&user), Some(&argon)),
        )?;
        let t3 = Instant::now();
        let s2 = s1.state.finish(c2.message, params())?;
        let t4 = Instant::now();
        anyhow::ensure!(s2.session_key == c2.session_key, "the two sides disagree");
        server.push((t2 - t1) + (t4 - t3));
        whole.push(t4 - t0);
    }
    server.sort();
    whole.sort();
    Ok(OpaqueFloor {
        server_us: percentile(&server, 0.5),
        whole_us: percentile(&whole, 0.5),
    })
}

/// The echo server's process mode: serves QUIC and TCP + TLS echo on loopback with the
/// certificate of the keyserver data dir `dir`, prints `echo quic=ADDR tcp=ADDR`, and runs
/// until killed.
pub(crate) async fn echo_server(dir: &Path) -> anyhow::Result<()> {
    let (certs, key) = keyserver::pki::load_server_identity(dir)?;
    let tls = keyserver::transport::tls::server_config(certs, key)?;
    let config = keyserver::config::Config {
        max_streams_per_connection: 1024,
        ..keyserver::config::Config::default()
    };
    let quic = keyserver::transport::quic::server_config(tls.clone(), &config)?;
    let endpoint = quinn::Endpoint::server(quic, "127.0.0.1:0".parse()?)?;
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "echo quic={} tcp={}",
            endpoint.local_addr()?,
            tcp.local_addr()?
        )?;
        out.flush()?;
    }
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    tokio::spawn(async move {
                        if let Ok(b) = recv.read_to_end(MAX_MESSAGE).await
                            && send.write_all(&b).await.is_ok()
                        {
                            let _ = send.finish();
                        }
                    });
                }
            });
        }
    });
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    loop {
        let (sock, _) = tcp.accept().await?;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _ = sock.set_nodelay(true);
            let Ok(stream) = acceptor.accept(sock).await else {
                return;
            };
            // The frames (length, id, body) come back as they went: an echo.
            let (mut r, mut w) = tokio::io::split(stream);
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
    }
}

/// The echo server process and its addresses.
pub(crate) struct Echo {
    pub(crate) _process: crate::ServerProcess,
    pub(crate) quic: std::net::SocketAddr,
    pub(crate) tcp: std::net::SocketAddr,
}

/// Starts this binary as an echo server with the certificate in `dir`.
pub(crate) fn start_echo(dir: &Path) -> anyhow::Result<Echo> {
    let exe = std::env::current_exe()?;
    let (process, line) = crate::spawn_and_read_line(
        std::process::Command::new(exe)
            .arg("--echo-server")
            .arg(dir),
    )?;
    let field = |k: &str| -> anyhow::Result<std::net::SocketAddr> {
        keyserver_tests::listening(&line, k)
            .with_context(|| format!("no {k} in {line:?}"))?
            .parse()
            .context("bad address")
    };
    Ok(Echo {
        quic: field("quic")?,
        tcp: field("tcp")?,
        _process: process,
    })
}

/// Median time of `n` fresh connections (the handshake, until the first byte could be
/// sent), each closed before the next.
pub(crate) async fn handshake_floor(
    echo: &Echo,
    ca: &Path,
    quic: bool,
    n: usize,
) -> anyhow::Result<f64> {
    let certs = local_client::connect::load_ca(ca)?;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let tls = local_client::connect::tls_config(&certs)?;
        let t = Instant::now();
        if quic {
            let link =
                local_client::connect::QuicLink::connect(echo.quic, "localhost", tls).await?;
            times.push(t.elapsed());
            link.close_and_wait().await;
        } else {
            let link = local_client::tcp::TcpLink::connect(echo.tcp, "localhost", tls).await?;
            times.push(t.elapsed());
            link.close();
        }
    }
    times.sort();
    Ok(percentile(&times, 0.5))
}

/// Rate of `INSERT` + commit, one at a time, for `secs`, on a fresh SQLite file with the
/// server's settings.
pub(crate) async fn sqlite_insert_floor(secs: f64) -> anyhow::Result<f64> {
    use sqlx::{
        ConnectOptions, Connection,
        sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous},
    };
    let dir = tempfile::tempdir()?;
    let mut c = SqliteConnectOptions::new()
        .filename(dir.path().join("floor.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .connect()
        .await?;
    sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB NOT NULL)")
        .execute(&mut c)
        .await?;
    let blob = [0x5au8; 64];
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut n = 0i64;
    while Instant::now() < deadline {
        let mut tx = c.begin().await?;
        sqlx::query("INSERT INTO t (id, v) VALUES (?, ?)")
            .bind(n)
            .bind(&blob[..])
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// The same on Postgres, in a scratch table of `schema`.
pub(crate) async fn postgres_insert_floor(
    url: &str,
    schema: &str,
    secs: f64,
) -> anyhow::Result<f64> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(url).await?;
    sqlx::query(&format!(
        "CREATE TABLE {schema}.floor (id BIGINT PRIMARY KEY, v BYTEA NOT NULL)"
    ))
    .execute(&mut c)
    .await?;
    let insert = format!("INSERT INTO {schema}.floor (id, v) VALUES ($1, $2)");
    let blob = [0x5au8; 64];
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut n = 0i64;
    while Instant::now() < deadline {
        let mut tx = c.begin().await?;
        sqlx::query(&insert)
            .bind(n)
            .bind(&blob[..])
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}
