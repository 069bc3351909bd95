#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    reason = "statistics over durations and counts: rounding is intended"
)]
//! `keyserver-bench`: starts the real `keyserver` binary on loopback (a fresh data dir,
//! SQLite) and measures requests per second and latency over ONE connection, per transport,
//! at several numbers of requests in flight. Prints a table; `--json FILE` writes it too.
//!
//! ```text
//! cargo build --release --bins && target/release/keyserver-bench       # full run
//! target/release/keyserver-bench --quick                               # a few seconds
//! ```

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Parser;
use keyserver_protocol::{SecretBytes, SecretName, UserName, suite::KsfParams};
use local_client::{ClientConfig, Connection, Session, Transport};

#[derive(Debug, Parser)]
#[command(
    name = "keyserver-bench",
    about = "Benchmarks the real keyserver binary on loopback."
)]
struct Args {
    /// Seconds per measurement (default 5; 1 with --quick).
    #[arg(long)]
    seconds: Option<f64>,
    /// A short run for CI: 1 s per measurement.
    #[arg(long)]
    quick: bool,
    /// The keyserver binary (default: next to this one).
    #[arg(long)]
    keyserver: Option<PathBuf>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also measure Postgres (one and three instances) on this database; each deployment
    /// gets a scratch schema, dropped at the end.
    #[arg(long, env = "KEYSERVER_BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// Only compare the time to answer LoginStart for an existing and an unknown user
    /// (interleaved, same connection), the enumeration check of the threat model.
    #[arg(long)]
    enumeration: bool,
    /// Only time the client's key-stretching function (argon2id, RFC 9106 parameters).
    #[arg(long)]
    ksf: bool,
}

#[derive(Debug, Clone)]
struct Row {
    figure: &'static str,
    backend: &'static str,
    instances: usize,
    transport: &'static str,
    in_flight: usize,
    requests: u64,
    per_second: f64,
    p50_us: f64,
    p99_us: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return 0.0;
    };
    let i = ((last as f64) * p).round() as usize;
    sorted
        .get(i.min(last))
        .map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

/// Runs `op` in `in_flight` concurrent loops for `secs`.
async fn measure<F, Fut>(in_flight: usize, secs: f64, op: F) -> anyhow::Result<(u64, f64, f64, f64)>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for w in 0..in_flight {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                op(((w as u64) << 32) | i).await?;
                lat.push(t.elapsed());
                i += 1;
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    let n = all.len() as u64;
    Ok((
        n,
        n as f64 / elapsed,
        percentile(&all, 0.5),
        percentile(&all, 0.99),
    ))
}

/// The server process; killed when dropped.
struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(
    bin: &Path,
    dir: &Path,
    extra: &[String],
) -> anyhow::Result<(ServerProcess, String)> {
    let mut child = Command::new(bin)
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .env("KEYSERVER_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let guard = ServerProcess(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(l)) = lines.next() {
            let _ = tx.send(l);
        }
        for _ in lines {}
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .context("the server printed no listening line")?;
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("quic="))
        .context("no quic= address")?;
    Ok((guard, addr.to_string()))
}

fn default_keyserver() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe.parent().context("no parent dir")?.join("keyserver");
    if !p.is_file() {
        bail!(
            "{} not found: build it first (cargo build --release --bins) or pass --keyserver",
            p.display()
        );
    }
    Ok(p)
}

async fn session(
    addr: &str,
    ca: &Path,
    transport: Transport,
    user: &str,
) -> anyhow::Result<(Connection, Session)> {
    let mut config = ClientConfig::new(addr, ca)?;
    // The server never runs the key-stretching function; the bytes on the wire are the same.
    config
        .transport(transport)
        .ksf(KsfParams::INSECURE_TEST_ONLY);
    let conn = Connection::connect(&config).await?;
    let user = UserName::new(user)?;
    let pw = SecretBytes::new(b"benchmark".to_vec());
    conn.register(&user, &pw).await?;
    let s = conn.login(&user, &pw).await?;
    Ok((conn, s))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

/// Times the client's argon2id with the protocol's parameters: the part of every CLI login
/// that is deliberately slow.
fn time_ksf() -> anyhow::Result<()> {
    let argon = KsfParams::default()
        .argon2()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut out = [0u8; 64];
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        argon
            .hash_password_into(b"password", b"somesaltsomesalt", &mut out)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "argon2id m=64 MiB t=3 p=4: median {:.1} ms over 5",
        percentile(&times, 0.5) / 1000.0
    );
    Ok(())
}

/// Times `LoginStart` (the server's whole first login step: account lookup, OPAQUE
/// evaluation, guess count) for a registered user and for an unknown one, alternating on one
/// connection, and prints both distributions side by side.
async fn time_enumeration(bin: &Path, rounds: usize) -> anyhow::Result<()> {
    use keyserver_protocol::{Request, Response, handshake::login};
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("data");
    let init = Command::new(bin)
        .arg("init")
        .arg("--data-dir")
        .arg(&dir)
        .output()?;
    if !init.status.success() {
        bail!("keyserver init failed");
    }
    // No lockout and no rate limit during the measurement: both would change the path taken.
    std::fs::write(
        dir.join("keyserver.toml"),
        "max_failed_logins = 1000\nhandshakes_per_second_per_address = 1000000\nhandshake_burst_per_address = 1000000\n",
    )?;
    let (_server, addr) = start_server(bin, &dir, &[])?;
    let (conn, _s) = session(&addr, &dir.join("ca.pem"), Transport::Quic, "exists").await?;
    drop(conn);
    let ca = local_client::connect::load_ca(&dir.join("ca.pem"))?;
    let link = local_client::connect::QuicLink::connect(
        addr.parse()?,
        "localhost",
        local_client::connect::tls_config(&ca)?,
    )
    .await?;
    let pw = SecretBytes::new(b"wrong guess".to_vec());
    let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let mut sizes = [0usize; 2];
    for i in 0..rounds * 2 {
        let who = i % 2;
        let user = UserName::new(if who == 0 { "exists" } else { "does-not-exist" })?;
        let (_, ke1) = login::start(&mut rand::rngs::OsRng, &user, &pw)?;
        let req = Request::LoginStart { user, message: ke1 }.encode();
        let t = Instant::now();
        let resp = link
            .call(&req)
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        times[who].push(t.elapsed());
        if !matches!(Response::decode(&resp)?, Response::LoginStarted { .. }) {
            bail!("unexpected reply");
        }
        sizes[who] = resp.len();
    }
    for t in &mut times {
        t.sort();
    }
    println!("LoginStart over one QUIC connection, {rounds} each, alternating:");
    for (who, label) in [(0, "existing user"), (1, "unknown user")] {
        println!(
            "  {label:<14} p10 {:>7.0} µs  p50 {:>7.0} µs  p90 {:>7.0} µs  p99 {:>7.0} µs  reply {} bytes",
            percentile(&times[who], 0.1),
            percentile(&times[who], 0.5),
            percentile(&times[who], 0.9),
            percentile(&times[who], 0.99),
            sizes[who]
        );
    }
    Ok(())
}

/// One deployment to measure: a backend and a number of instances.
struct Deployment {
    backend: &'static str,
    instances: usize,
    database_url: Option<String>,
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.ksf {
        return time_ksf();
    }
    if args.enumeration {
        let bin = match &args.keyserver {
            Some(p) => p.clone(),
            None => default_keyserver()?,
        };
        return time_enumeration(&bin, if args.quick { 100 } else { 1000 }).await;
    }
    let secs = args.seconds.unwrap_or(if args.quick { 1.0 } else { 5.0 });
    let bin = match &args.keyserver {
        Some(p) => p.clone(),
        None => default_keyserver()?,
    };
    let mut deployments = vec![Deployment {
        backend: "sqlite",
        instances: 1,
        database_url: None,
    }];
    let schema = match &args.database_url {
        Some(url) => Some(BenchSchema::create(url).await?),
        None => None,
    };
    if let Some(schema) = &schema {
        for instances in [1, 3] {
            deployments.push(Deployment {
                backend: "postgres",
                instances,
                database_url: Some(schema.url(instances)),
            });
        }
    }
    let mut rows = Vec::new();
    for d in &deployments {
        if let Some(schema) = &schema {
            schema.reset(d.instances).await?;
        }
        rows.extend(measure_deployment(&bin, d, secs).await?);
    }
    println!(
        "{:<22} {:<8} {:>4} {:<5} {:>9} {:>9} {:>10} {:>10} {:>10}",
        "figure", "backend", "inst", "tr", "in flight", "requests", "req/s", "p50 µs", "p99 µs"
    );
    for r in &rows {
        println!(
            "{:<22} {:<8} {:>4} {:<5} {:>9} {:>9} {:>10.0} {:>10.0} {:>10.0}",
            r.figure,
            r.backend,
            r.instances,
            r.transport,
            r.in_flight,
            r.requests,
            r.per_second,
            r.p50_us,
            r.p99_us
        );
    }
    if let Some(path) = &args.json {
        let v: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "figure": r.figure, "backend": r.backend, "instances": r.instances, "transport": r.transport,
                    "in_flight": r.in_flight, "requests": r.requests, "per_second": r.per_second,
                    "p50_us": r.p50_us, "p99_us": r.p99_us,
                })
            })
            .collect();
        std::fs::write(path, serde_json::to_string_pretty(&v)?)?;
    }
    if let Some(schema) = schema {
        schema.drop_all().await?;
    }
    Ok(())
}

/// A scratch schema per deployment in the benchmark's Postgres database.
struct BenchSchema {
    base: String,
    name: String,
}

impl BenchSchema {
    async fn create(base: &str) -> anyhow::Result<Self> {
        let name = format!("ks_bench_{}", std::process::id());
        Ok(Self {
            base: base.to_string(),
            name,
        })
    }

    fn schema(&self, instances: usize) -> String {
        format!("{}_{instances}", self.name)
    }

    fn url(&self, instances: usize) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!(
            "{}{sep}options[search_path]={}",
            self.base,
            self.schema(instances)
        )
    }

    async fn exec(&self, sql: &str) -> anyhow::Result<()> {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&self.base).await?;
        sqlx::query(sql).execute(&mut c).await?;
        Ok(())
    }

    async fn reset(&self, instances: usize) -> anyhow::Result<()> {
        let s = self.schema(instances);
        self.exec(&format!("DROP SCHEMA IF EXISTS {s} CASCADE"))
            .await?;
        self.exec(&format!("CREATE SCHEMA {s}")).await
    }

    async fn drop_all(&self) -> anyhow::Result<()> {
        for n in [1, 3] {
            self.exec(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema(n)))
                .await?;
        }
        Ok(())
    }
}

async fn measure_deployment(bin: &Path, d: &Deployment, secs: f64) -> anyhow::Result<Vec<Row>> {
    let tmp = tempfile::tempdir()?;
    let first = tmp.path().join("instance-0");
    let init = Command::new(bin)
        .arg("init")
        .arg("--data-dir")
        .arg(&first)
        .output()?;
    if !init.status.success() {
        bail!(
            "keyserver init failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
    }
    let mut servers = Vec::new();
    for i in 0..d.instances {
        let dir = tmp.path().join(format!("instance-{i}"));
        if i > 0 {
            std::fs::create_dir_all(&dir)?;
            for f in std::fs::read_dir(&first)? {
                let f = f?;
                std::fs::copy(f.path(), dir.join(f.file_name()))?;
            }
        }
        let mut args = vec![];
        if let Some(url) = &d.database_url {
            args.extend(["--database-url".to_string(), url.clone()]);
        }
        servers.push(start_server(bin, &dir, &args)?);
    }
    let ca = first.join("ca.pem");
    let secret = SecretBytes::new(vec![0x5a; 64]);
    let transports: &[(Transport, &'static str)] = if d.instances == 1 {
        &[(Transport::Quic, "quic"), (Transport::Tcp, "tcp")]
    } else {
        &[(Transport::Quic, "quic")]
    };
    let mut rows = Vec::new();
    for &(transport, tname) in transports {
        // One connection and one session per instance; the requests in flight are spread
        // over them.
        let mut sessions = Vec::new();
        for (i, (_, addr)) in servers.iter().enumerate() {
            let (conn, s) = session(addr, &ca, transport, &format!("bench-{tname}-{i}")).await?;
            sessions.push((conn, s));
        }
        let sessions: Arc<Vec<Session>> = Arc::new(sessions.into_iter().map(|(_, s)| s).collect());
        let name = SecretName::new("k")?;
        for s in sessions.iter() {
            s.store(&name, &secret, false).await?;
        }
        for in_flight in [1usize, 16, 256] {
            let (ss, n2) = (sessions.clone(), name.clone());
            let (requests, per_second, p50_us, p99_us) = measure(in_flight, secs, move |id| {
                let (s, n) = (ss[(id >> 32) as usize % ss.len()].clone(), n2.clone());
                async move {
                    s.retrieve(&n).await?;
                    Ok(())
                }
            })
            .await?;
            let row = |figure, requests, per_second, p50_us, p99_us| Row {
                figure,
                backend: d.backend,
                instances: d.instances,
                transport: tname,
                in_flight,
                requests,
                per_second,
                p50_us,
                p99_us,
            };
            rows.push(row("retrieve 64 B", requests, per_second, p50_us, p99_us));
            let (ss, sec) = (sessions.clone(), secret.clone());
            let (requests, per_second, p50_us, p99_us) = measure(in_flight, secs, move |id| {
                let (s, sec) = (ss[(id >> 32) as usize % ss.len()].clone(), sec.clone());
                async move {
                    let n = SecretName::new(format!("s{in_flight}-{id}"))?;
                    s.store(&n, &sec, false).await?;
                    Ok(())
                }
            })
            .await?;
            rows.push(row(
                "store 64 B (durable)",
                requests,
                per_second,
                p50_us,
                p99_us,
            ));
        }
    }
    Ok(rows)
}
