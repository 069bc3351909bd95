#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    reason = "statistics over durations and counts: rounding is intended"
)]
//! `keyserver-bench`: starts the real `keyserver` binary on loopback and measures, in ONE
//! run, each figure beside its floor (the bare building block it is made of), and prints
//! the ratio. `--json FILE` writes the same table as JSON.
//!
//! ```text
//! cargo build --release --bins && target/release/keyserver-bench       # full run
//! target/release/keyserver-bench --quick                               # a few seconds
//! target/release/keyserver-bench --plot DIR                            # charts, 90 s
//! target/release/keyserver-bench --soak 600 --plot DIR                 # a 10-minute soak
//! ```
//!
//! Figures (see `BENCHMARKS.md`): logins per second and server CPU per login vs opaque-ke
//! alone; the cost of opening a session vs a bare handshake + bare OPAQUE; retrieves and
//! durable stores over one QUIC / TCP connection at 1, 16 and 256 in flight vs a bare echo
//! server; memory per idle session; durable stores vs one `INSERT` + commit on SQLite and
//! Postgres.

mod floors;
mod plot;
mod relay;
mod soak;

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Parser;
use keyserver_protocol::{SecretBytes, SecretName, UserName, suite::KsfParams};
use keyserver_tests::PgSchema;
use local_client::{ClientConfig, Connection, Link, Session, Transport};

#[derive(Debug, Parser)]
#[command(
    name = "keyserver-bench",
    about = "Benchmarks the real keyserver binary on loopback, beside its floors."
)]
#[allow(clippy::struct_excessive_bools, reason = "command-line switches")]
struct Args {
    /// Seconds per throughput measurement (default 3; 0.5 with --quick).
    #[arg(long)]
    seconds: Option<f64>,
    /// A short run for CI: every figure, on small counts.
    #[arg(long)]
    quick: bool,
    /// The keyserver binary (default: next to this one).
    #[arg(long)]
    keyserver: Option<PathBuf>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Print the table as Markdown.
    #[arg(long)]
    markdown: bool,
    /// Also measure durable stores on Postgres (and its bare INSERT + commit) on this
    /// database, in a scratch schema dropped at the end.
    #[arg(long, env = "KEYSERVER_BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// Only the earlier table of retrieves and stores per backend, with one and three
    /// instances on Postgres (needs --database-url for the Postgres rows).
    #[arg(long)]
    fleet: bool,
    /// Only compare the time to answer LoginStart for an existing and an unknown user
    /// (interleaved, same connection), the enumeration check of the threat model.
    #[arg(long)]
    enumeration: bool,
    /// Only time the client's key-stretching function (argon2id, RFC 9106 parameters).
    #[arg(long)]
    ksf: bool,
    /// Only the enclave's costs: retrieves through `keyserver host` against the direct
    /// path on QUIC and TCP, and opening a session with attestation against without.
    #[arg(long)]
    relay: bool,
    /// Only the durable stores on Postgres beside one INSERT + commit (needs
    /// --database-url).
    #[arg(long)]
    postgres: bool,
    /// Only a soak of this many seconds: 200 sessions on both transports under a mixed
    /// load against one server (Postgres with --database-url), throughput per minute,
    /// errors, the server's memory and descriptors; fails on any error or growth past its
    /// bound.
    #[arg(long, value_name = "SECONDS")]
    soak: Option<f64>,
    /// Write SVG charts here: with --soak, the soak's throughput and memory over time;
    /// alone, retrieves and stores against requests in flight beside the echo floor.
    #[arg(long, value_name = "DIR")]
    plot: Option<PathBuf>,
    /// Internal: serve the bare echo floor with the certificate of this data dir.
    #[arg(long, hide = true)]
    echo_server: Option<PathBuf>,
}

/// Median and 99th percentile, µs.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return 0.0;
    };
    let i = ((last as f64) * p).round() as usize;
    sorted
        .get(i.min(last))
        .map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

/// Throughput and latency of one load.
#[derive(Debug, Clone, Copy)]
struct Load {
    requests: u64,
    per_second: f64,
    p50_us: f64,
    p99_us: f64,
}

/// Runs `op` in `in_flight` concurrent loops for `secs`.
async fn measure<F, Fut>(in_flight: usize, secs: f64, op: F) -> anyhow::Result<Load>
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
    Ok(Load {
        requests: n,
        per_second: n as f64 / elapsed,
        p50_us: percentile(&all, 0.5),
        p99_us: percentile(&all, 0.99),
    })
}

/// A child process; killed when dropped (the tests' harness).
pub(crate) use keyserver_tests::Process as ServerProcess;

/// Spawns `cmd` and waits (60 s at most) for the first line it prints.
pub(crate) fn spawn_and_read_line(cmd: &mut Command) -> anyhow::Result<(ServerProcess, String)> {
    ServerProcess::spawn_and_read_line(cmd, Duration::from_secs(60))
        .context("cannot start a child process")
}

/// Starts the keyserver `bin` on `dir` (the tests' harness); the process and its QUIC
/// address.
fn start_server(
    bin: &Path,
    dir: &Path,
    extra: &[String],
) -> anyhow::Result<(keyserver_tests::Server, String)> {
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let server = keyserver_tests::Server::try_start(bin, dir, &extra, &[])
        .context("cannot start the keyserver")?;
    let addr = server.addr.clone();
    Ok((server, addr))
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

fn client_config(addr: &str, ca: &Path, transport: Transport) -> anyhow::Result<ClientConfig> {
    let mut config = ClientConfig::new(addr, ca)?;
    // The server never runs the key-stretching function; the bytes on the wire are the same.
    config
        .transport(transport)
        .ksf(KsfParams::INSECURE_TEST_ONLY);
    Ok(config)
}

async fn session(
    addr: &str,
    ca: &Path,
    transport: Transport,
    user: &str,
) -> anyhow::Result<(Connection, Session)> {
    let conn = Connection::connect(&client_config(addr, ca, transport)?).await?;
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
    if let Some(dir) = &args.echo_server {
        return rt.block_on(floors::echo_server(dir));
    }
    rt.block_on(run(args))
}

/// The keyserver.toml of the benchmark's servers: no lockout, no rate limit, no session
/// cap per account, so that the path measured is the normal one at full speed.
const BENCH_CONFIG: &str = "\
max_failed_logins = 1000
handshakes_per_second_per_address = 1000000
handshake_burst_per_address = 1000000
handshakes_per_second = 10000000
max_pending_handshakes = 1000000
max_sessions_per_account = 100000
max_sessions = 10000000
max_streams_per_connection = 1024
signatures_per_minute_per_key = 10000000
signatures_per_minute_per_account = 10000000
";

/// One line of the table.
#[derive(Debug, Clone)]
struct Figure {
    figure: String,
    value: f64,
    unit: &'static str,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    /// Server CPU time per operation, µs (user + system, from /proc).
    cpu_us: Option<f64>,
    floor_name: &'static str,
    floor: Option<f64>,
    /// What the ratio (measured ÷ floor) should be.
    target: &'static str,
}

impl Figure {
    fn new(figure: impl Into<String>, value: f64, unit: &'static str) -> Self {
        Self {
            figure: figure.into(),
            value,
            unit,
            p50_us: None,
            p99_us: None,
            cpu_us: None,
            floor_name: "",
            floor: None,
            target: "",
        }
    }

    fn load(figure: impl Into<String>, l: Load) -> Self {
        Self {
            p50_us: Some(l.p50_us),
            p99_us: Some(l.p99_us),
            ..Self::new(figure, l.per_second, "req/s")
        }
    }

    fn floor(mut self, name: &'static str, value: f64) -> Self {
        self.floor_name = name;
        self.floor = Some(value);
        self
    }

    fn target(mut self, target: &'static str) -> Self {
        self.target = target;
        self
    }

    fn cpu(mut self, cpu_us: f64) -> Self {
        self.cpu_us = Some(cpu_us);
        self
    }

    fn ratio(&self) -> Option<f64> {
        self.floor.filter(|f| *f > 0.0).map(|f| self.value / f)
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "figure": self.figure, "value": self.value, "unit": self.unit,
            "p50_us": self.p50_us, "p99_us": self.p99_us, "server_cpu_us_per_op": self.cpu_us,
            "floor": self.floor_name, "floor_value": self.floor, "ratio": self.ratio(),
            "target": self.target,
        })
    }
}

fn num(v: f64) -> String {
    let r = v.round();
    if r.abs() < 1e15 {
        let s = format!("{}", r as i64);
        let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        format!("{sign}{out}")
    } else {
        format!("{v:e}")
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), num)
}

fn print_table(figures: &[Figure], markdown: bool) {
    let ratio = |f: &Figure| f.ratio().map_or_else(|| "-".into(), |r| format!("{r:.2}"));
    if markdown {
        println!(
            "| figure | measured | unit | p50 µs | p99 µs | server CPU µs/op | floor | floor value | ratio | target |"
        );
        println!("| --- | ---: | --- | ---: | ---: | ---: | --- | ---: | ---: | --- |");
        for f in figures {
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                f.figure,
                num(f.value),
                f.unit,
                opt(f.p50_us),
                opt(f.p99_us),
                opt(f.cpu_us),
                if f.floor_name.is_empty() {
                    "-"
                } else {
                    f.floor_name
                },
                opt(f.floor),
                ratio(f),
                if f.target.is_empty() { "-" } else { f.target },
            );
        }
        return;
    }
    println!(
        "{:<46} {:>10} {:<6} {:>9} {:>9} {:>7} {:>6} {:<11} floor",
        "figure", "measured", "unit", "p50 µs", "p99 µs", "cpu µs", "ratio", "target"
    );
    for f in figures {
        println!(
            "{:<46} {:>10} {:<6} {:>9} {:>9} {:>7} {:>6} {:<11} {}",
            f.figure,
            num(f.value),
            f.unit,
            opt(f.p50_us),
            opt(f.p99_us),
            opt(f.cpu_us),
            ratio(f),
            f.target,
            if f.floor_name.is_empty() {
                String::new()
            } else {
                format!("{} = {}", f.floor_name, opt(f.floor))
            },
        );
    }
}

/// CPU time (user + system) a process has used so far, µs.
fn cpu_time_us(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("bad /proc stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of proc(5), counted from the state (field 3) here.
    let ticks: f64 = fields.get(11).context("no utime")?.parse::<f64>()?
        + fields.get(12).context("no stime")?.parse::<f64>()?;
    Ok(ticks * 1e6 / clock_ticks())
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Resident memory of a process, bytes.
fn rss_bytes(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kib * 1024.0)
}

/// A data dir made by `keyserver init`, with the benchmark's config.
fn init_dir(bin: &Path, dir: &Path) -> anyhow::Result<()> {
    keyserver_tests::try_init(bin, dir)?;
    std::fs::write(dir.join("keyserver.toml"), BENCH_CONFIG)?;
    Ok(())
}

fn bench_user(i: usize) -> anyhow::Result<UserName> {
    Ok(UserName::new(format!("bench-{i}"))?)
}

fn password() -> SecretBytes {
    SecretBytes::new(b"benchmark".to_vec())
}

/// Registers users `0..n` over `conn`, 32 at a time.
async fn register_users(conn: &Connection, n: usize) -> anyhow::Result<()> {
    run_all(conn, n, 32, |conn, i| async move {
        conn.register(&bench_user(i)?, &password()).await?;
        Ok(())
    })
    .await
    .map(|_: Vec<()>| ())
}

/// Logs users `0..n` in over `conn` (user `i % users`), 32 at a time.
async fn login_users(conn: &Connection, n: usize, users: usize) -> anyhow::Result<Vec<Session>> {
    run_all(conn, n, 32, move |conn, i| async move {
        Ok(conn.login(&bench_user(i % users)?, &password()).await?)
    })
    .await
}

/// Runs `f(conn, i)` for `i` in `0..n`, `width` at a time, results in order.
async fn run_all<T, F, Fut>(
    conn: &Connection,
    n: usize,
    width: usize,
    f: F,
) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(Connection, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let f = Arc::new(f);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..width.min(n.max(1)) {
        let (f, next, conn) = (f.clone(), next.clone(), conn.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(out);
                }
                out.push((i, f(conn.clone(), i).await?));
            }
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, v)| v).collect())
}

/// How much work each part of the run does.
struct Plan {
    secs: f64,
    opaque_logins: usize,
    handshakes: usize,
    users: usize,
    idle_sessions: usize,
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.ksf {
        return time_ksf();
    }
    let bin = match &args.keyserver {
        Some(p) => p.clone(),
        None => default_keyserver()?,
    };
    if args.enumeration {
        return time_enumeration(&bin, if args.quick { 100 } else { 1000 }).await;
    }
    if let Some(secs) = args.soak {
        anyhow::ensure!(
            secs.is_finite() && secs >= 1.0,
            "--soak takes at least 1 second"
        );
        let report = soak::soak(&bin, secs, args.database_url.as_deref()).await?;
        report.print();
        if let Some(path) = &args.json {
            std::fs::write(path, serde_json::to_string_pretty(&report.json())?)?;
        }
        if let Some(dir) = &args.plot {
            plot::soak_charts(dir, &report)?;
        }
        let failures = report.failures();
        anyhow::ensure!(
            failures.is_empty(),
            "the soak failed: {}",
            failures.join("; ")
        );
        return Ok(());
    }
    let secs = args.seconds.unwrap_or(if args.quick { 0.5 } else { 3.0 });
    if let Some(dir) = &args.plot {
        return sweep(&bin, secs, dir, args.quick).await;
    }
    if args.relay {
        let figures = relay::figures(&bin, secs, if args.quick { 10 } else { 200 }).await?;
        print_table(&figures, args.markdown);
        return Ok(());
    }
    if args.fleet {
        return fleet(&args, &bin, secs).await;
    }
    if args.postgres {
        let url = args
            .database_url
            .as_deref()
            .context("--postgres needs --database-url")?;
        let tmp = tempfile::tempdir()?;
        let plan = Plan {
            secs,
            opaque_logins: 0,
            handshakes: 0,
            users: if args.quick { 64 } else { 256 },
            idle_sessions: 0,
        };
        let figures = postgres_stores(&bin, tmp.path(), url, &plan).await?;
        print_table(&figures, args.markdown);
        return Ok(());
    }
    let plan = if args.quick {
        Plan {
            secs,
            opaque_logins: 50,
            handshakes: 10,
            users: 64,
            idle_sessions: 1_000,
        }
    } else {
        Plan {
            secs,
            opaque_logins: 1_000,
            handshakes: 200,
            users: 256,
            idle_sessions: 10_000,
        }
    };
    let figures = measure_all(&bin, &plan, args.database_url.as_deref()).await?;
    print_table(&figures, args.markdown);
    if let Some(path) = &args.json {
        let v: Vec<_> = figures.iter().map(Figure::json).collect();
        std::fs::write(path, serde_json::to_string_pretty(&v)?)?;
    }
    Ok(())
}

async fn measure_all(
    bin: &Path,
    plan: &Plan,
    database_url: Option<&str>,
) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("server");
    init_dir(bin, &dir)?;
    let ca = dir.join("ca.pem");

    // Floors first, each alone on the machine.
    eprintln!("floors: OPAQUE, handshakes, echo, INSERT + commit ...");
    let opaque = floors::opaque_floor(plan.opaque_logins)?;
    let echo = floors::start_echo(&dir)?;
    let quic_handshake = floors::handshake_floor(&echo, &ca, true, plan.handshakes).await?;
    let tcp_handshake = floors::handshake_floor(&echo, &ca, false, plan.handshakes).await?;
    let mut echo_loads = Vec::new();
    for (transport, quic) in [("quic", true), ("tcp", false)] {
        for in_flight in [1usize, 16, 256] {
            let load = echo_load(&echo, &ca, quic, in_flight, plan.secs).await?;
            echo_loads.push(((transport, in_flight), load));
        }
    }
    drop(echo);
    let sqlite_insert = floors::sqlite_insert_floor(plan.secs).await?;

    // The server.
    let (server, addr) = start_server(bin, &dir, &[])?;
    let pid = server.pid();
    let conn = Connection::connect(&client_config(&addr, &ca, Transport::Quic)?).await?;
    eprintln!("registering {} users ...", plan.users);
    register_users(&conn, plan.users).await?;

    eprintln!("logins ...");
    let users = plan.users;
    let cpu0 = cpu_time_us(pid)?;
    let (c, n) = (conn.clone(), users);
    let logins = measure(32, plan.secs, move |id| {
        let c = c.clone();
        async move {
            let i = ((id >> 32) as usize + (id & 0xffff_ffff) as usize * 32) % n;
            c.login(&bench_user(i)?, &password()).await?;
            Ok(())
        }
    })
    .await?;
    let login_cpu = (cpu_time_us(pid)? - cpu0) / logins.requests.max(1) as f64;
    let opaque_per_core = 1e6 / opaque.server_us;
    figures.push(
        Figure::load("logins/s, 32 in flight, QUIC", logins)
            .cpu(login_cpu)
            .floor("opaque-ke server login/s, one core", opaque_per_core)
            .target(">= 0.70"),
    );
    figures.push(
        Figure::new("server CPU per login", login_cpu, "µs")
            .floor("opaque-ke ServerLogin start+finish µs", opaque.server_us),
    );

    eprintln!("session opening ...");
    for (transport, tname, handshake) in [
        (Transport::Quic, "QUIC", quic_handshake),
        (Transport::Tcp, "TCP", tcp_handshake),
    ] {
        let config = client_config(&addr, &ca, transport)?;
        let mut times = Vec::new();
        for i in 0..plan.handshakes {
            let t = Instant::now();
            let c = Connection::connect(&config).await?;
            c.login(&bench_user(i % users)?, &password()).await?;
            times.push(t.elapsed());
            c.shutdown().await;
        }
        times.sort();
        let p50 = percentile(&times, 0.5);
        let mut f = Figure::new(format!("open a session ({tname} + login), p50"), p50, "µs").floor(
            if tname == "QUIC" {
                "bare QUIC handshake + bare OPAQUE login µs"
            } else {
                "bare TCP+TLS handshake + bare OPAQUE login µs"
            },
            handshake + opaque.whole_us,
        );
        f.p50_us = Some(p50);
        f.p99_us = Some(percentile(&times, 0.99));
        figures.push(f);
    }

    for (transport, tname) in [(Transport::Quic, "quic"), (Transport::Tcp, "tcp")] {
        eprintln!("retrieve and store over one {tname} connection ...");
        let c = Connection::connect(&client_config(&addr, &ca, transport)?).await?;
        let sessions = Arc::new(login_users(&c, users, users).await?);
        let secret = SecretBytes::new(vec![0x5a; 64]);
        let k = SecretName::new("k")?;
        for s in sessions.iter() {
            s.store(&k, &secret, true).await?;
        }
        for in_flight in [1usize, 16, 256] {
            let echo = echo_loads
                .iter()
                .find(|(key, _)| *key == (tname, in_flight))
                .map(|(_, l)| *l)
                .context("no echo figure")?;
            let (ss, k2) = (sessions.clone(), k.clone());
            let cpu0 = cpu_time_us(pid)?;
            let load = measure(in_flight, plan.secs, move |id| {
                let s = pick(&ss, id).clone();
                let k = k2.clone();
                async move {
                    s.retrieve(&k).await?;
                    Ok(())
                }
            })
            .await?;
            let cpu = (cpu_time_us(pid)? - cpu0) / load.requests.max(1) as f64;
            let mut f = Figure::load(
                format!("retrieve 64 B, {tname}, {in_flight} in flight"),
                load,
            )
            .cpu(cpu)
            .floor("bare echo req/s", echo.per_second);
            if in_flight > 1 && tname == "quic" {
                f = f.target(">= 0.50");
            }
            figures.push(f);
            if in_flight == 1 {
                let mut f = Figure::new(
                    format!("retrieve p50, {tname}, 1 in flight"),
                    load.p50_us,
                    "µs",
                )
                .floor("bare echo round trip p50 µs", echo.p50_us);
                if tname == "quic" {
                    f = f.target("<= 2.0");
                }
                figures.push(f);
            }
            let (load, cpu) = store_load(pid, &sessions, tname, in_flight, plan.secs).await?;
            figures.push(
                Figure::load(
                    format!("durable store 64 B, {tname}, {in_flight} in flight"),
                    load,
                )
                .cpu(cpu)
                .floor("bare echo req/s", echo.per_second),
            );
            if in_flight == 256 && tname == "quic" {
                figures.push(
                    Figure::load("SQLite: durable store, 256 in flight", load)
                        .cpu(cpu)
                        .floor("one INSERT + commit alone, /s", sqlite_insert)
                        .target(">= 20,000/s"),
                );
            }
        }
        if tname == "quic" {
            eprintln!("signatures by server-held keys ...");
            figures.extend(sign_figures(pid, &sessions, plan.secs).await?);
        }
        c.shutdown().await;
    }
    drop(conn);
    drop(server);

    eprintln!("memory per idle session ...");
    figures.push(idle_session_memory(bin, tmp.path(), plan).await?);

    if let Some(url) = database_url {
        eprintln!("Postgres ...");
        figures.extend(postgres_stores(bin, tmp.path(), url, plan).await?);
    }
    Ok(figures)
}

/// `--plot DIR` alone: retrieves and durable stores of 64 B over one connection of each
/// transport at 1 to 256 requests in flight, beside the bare echo at the same points;
/// printed, and drawn as throughput and p99 charts.
async fn sweep(bin: &Path, secs: f64, dir: &Path, quick: bool) -> anyhow::Result<()> {
    const LEVELS: [usize; 5] = [1, 4, 16, 64, 256];
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let users = if quick { 64 } else { 256 };
    let tmp = tempfile::tempdir()?;
    let server_dir = tmp.path().join("server");
    init_dir(bin, &server_dir)?;
    let ca = server_dir.join("ca.pem");
    eprintln!("echo floor ...");
    let echo = floors::start_echo(&server_dir)?;
    let mut rows: Vec<(&str, &str, usize, Load)> = Vec::new();
    for (tname, quic) in [("quic", true), ("tcp", false)] {
        for n in LEVELS {
            rows.push((
                tname,
                "bare echo",
                n,
                echo_load(&echo, &ca, quic, n, secs).await?,
            ));
        }
    }
    drop(echo);
    let (server, addr) = start_server(bin, &server_dir, &[])?;
    let conn = Connection::connect(&client_config(&addr, &ca, Transport::Quic)?).await?;
    register_users(&conn, users).await?;
    for (transport, tname) in [(Transport::Quic, "quic"), (Transport::Tcp, "tcp")] {
        eprintln!("retrieve and store over one {tname} connection ...");
        let c = Connection::connect(&client_config(&addr, &ca, transport)?).await?;
        let sessions = Arc::new(login_users(&c, users, users).await?);
        let (k, secret) = (SecretName::new("k")?, SecretBytes::new(vec![0x5a; 64]));
        for s in sessions.iter() {
            s.store(&k, &secret, true).await?;
        }
        for n in LEVELS {
            let (ss, k2) = (sessions.clone(), k.clone());
            let load = measure(n, secs, move |id| {
                let (s, k) = (pick(&ss, id).clone(), k2.clone());
                async move {
                    s.retrieve(&k).await?;
                    Ok(())
                }
            })
            .await?;
            rows.push((tname, "retrieve", n, load));
            let prefix = if tname == "quic" { "plot-q" } else { "plot-t" };
            let (load, _) = store_load(server.pid(), &sessions, prefix, n, secs).await?;
            rows.push((tname, "durable store", n, load));
        }
        c.shutdown().await;
    }
    conn.shutdown().await;
    drop(server);

    println!("| transport | load | in flight | req/s | p50 µs | p99 µs |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    for (t, what, n, l) in &rows {
        println!(
            "| {t} | {what} | {n} | {} | {} | {} |",
            num(l.per_second),
            num(l.p50_us),
            num(l.p99_us)
        );
    }
    for tname in ["quic", "tcp"] {
        let series = |value: fn(&Load) -> f64| -> Vec<plot::Series> {
            ["retrieve", "durable store", "bare echo"]
                .into_iter()
                .map(|what| plot::Series {
                    name: what.into(),
                    points: rows
                        .iter()
                        .filter(|r| r.0 == tname && r.1 == what)
                        .map(|r| (r.2 as f64, value(&r.3)))
                        .collect(),
                })
                .collect()
        };
        let upper = tname.to_uppercase();
        plot::line_chart(
            &dir.join(format!("throughput-{tname}.svg")),
            &format!("64 B requests over one {upper} connection: throughput"),
            "requests in flight",
            "requests/s",
            &series(|l| l.per_second),
            true,
        )?;
        plot::line_chart(
            &dir.join(format!("p99-{tname}.svg")),
            &format!("64 B requests over one {upper} connection: p99 latency"),
            "requests in flight",
            "p99 latency, µs",
            &series(|l| l.p99_us),
            true,
        )?;
    }
    eprintln!("charts written to {}", dir.display());
    Ok(())
}

/// Signatures by server-held keys (each audited, durably, before it is answered), 16 in
/// flight over `sessions`, beside the bare crate's signing loop on one core.
async fn sign_figures(
    pid: u32,
    sessions: &Arc<Vec<Session>>,
    secs: f64,
) -> anyhow::Result<Vec<Figure>> {
    use keyserver_protocol::{
        KeyName,
        signing::{Algorithm, SignOptions},
    };
    let mut figures = Vec::new();
    let message = [0x42u8; 64];
    for (algorithm, name) in [
        (Algorithm::Ed25519, "bench-ed25519"),
        (Algorithm::Secp256k1, "bench-secp256k1"),
    ] {
        let key = KeyName::new(name)?;
        for s in sessions.iter() {
            s.generate_key(&key, algorithm, false).await?;
        }
        let bare = floors::signing_floor(algorithm, &message, secs);
        let ss = sessions.clone();
        let cpu0 = cpu_time_us(pid)?;
        let load = measure(16, secs, move |id| {
            let s = pick(&ss, id).clone();
            let key = key.clone();
            async move {
                s.sign(&key, &message, SignOptions::default()).await?;
                Ok(())
            }
        })
        .await?;
        let cpu = (cpu_time_us(pid)? - cpu0) / load.requests.max(1) as f64;
        figures.push(
            Figure::load(format!("sign 64 B, {algorithm}, QUIC, 16 in flight"), load)
                .cpu(cpu)
                .floor("bare crate signatures/s, one core", bare),
        );
    }
    Ok(figures)
}

/// Durable stores of 64 B, each a new name (`prefix` keeps runs apart), `in_flight` at a
/// time over `sessions` for `secs`; with the server's (`pid`) CPU time per store, µs.
async fn store_load(
    pid: u32,
    sessions: &Arc<Vec<Session>>,
    prefix: &'static str,
    in_flight: usize,
    secs: f64,
) -> anyhow::Result<(Load, f64)> {
    let ss = sessions.clone();
    let secret = SecretBytes::new(vec![0x5a; 64]);
    let cpu0 = cpu_time_us(pid)?;
    let load = measure(in_flight, secs, move |id| {
        let (s, sec) = (pick(&ss, id).clone(), secret.clone());
        async move {
            let n = SecretName::new(format!("{prefix}{in_flight}-{id:x}"))?;
            s.store(&n, &sec, false).await?;
            Ok(())
        }
    })
    .await?;
    let cpu = (cpu_time_us(pid)? - cpu0) / load.requests.max(1) as f64;
    Ok((load, cpu))
}

/// The session for request `id` of [`measure`]: every worker goes round all sessions, so
/// every account gets its share.
fn pick(sessions: &[Session], id: u64) -> &Session {
    let i = (id >> 32) as usize + (id & 0xffff_ffff) as usize;
    &sessions[i % sessions.len()]
}

/// The bare echo at `in_flight` over one connection of the given transport.
async fn echo_load(
    echo: &floors::Echo,
    ca: &Path,
    quic: bool,
    in_flight: usize,
    secs: f64,
) -> anyhow::Result<Load> {
    let certs = local_client::connect::load_ca(ca)?;
    let tls = local_client::connect::tls_config(&certs)?;
    // A sealed retrieve request is about this size.
    let payload: Arc<[u8]> = vec![0x5a; 64].into();
    // The same link code the real client uses.
    let link: Arc<dyn Link> = if quic {
        Arc::new(local_client::connect::QuicLink::connect(echo.quic, "localhost", tls).await?)
    } else {
        Arc::new(local_client::tcp::TcpLink::connect(echo.tcp, "localhost", tls).await?)
    };
    let l = link.clone();
    let load = measure(in_flight, secs, move |_| {
        let (l, p) = (l.clone(), payload.clone());
        async move {
            let r = l.call(&p).await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
            anyhow::ensure!(r.len() == p.len(), "echo changed the size");
            Ok(())
        }
    })
    .await?;
    link.close_and_wait().await;
    Ok(load)
}

/// RSS growth of a fresh server over `plan.idle_sessions` sessions, after a warm-up.
async fn idle_session_memory(bin: &Path, tmp: &Path, plan: &Plan) -> anyhow::Result<Figure> {
    let dir = tmp.join("memory");
    init_dir(bin, &dir)?;
    let (server, addr) = start_server(bin, &dir, &[])?;
    let conn =
        Connection::connect(&client_config(&addr, &dir.join("ca.pem"), Transport::Quic)?).await?;
    register_users(&conn, plan.users).await?;
    // Warm-up: caches, pools and allocator arenas reach their working size.
    drop(login_users(&conn, plan.idle_sessions / 10, plan.users).await?);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_bytes(server.pid())?;
    drop(login_users(&conn, plan.idle_sessions, plan.users).await?);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = rss_bytes(server.pid())?;
    conn.shutdown().await;
    let per = (after - before) / plan.idle_sessions as f64;
    let mut f = Figure::new(
        format!(
            "server memory per idle session ({} sessions)",
            plan.idle_sessions
        ),
        per,
        "bytes",
    )
    .floor("target bytes", 2048.0)
    .target("<= 1.0");
    f.floor_name = "2 KiB";
    Ok(f)
}

/// Durable stores at 256 in flight on a server using Postgres, beside one INSERT + commit.
async fn postgres_stores(
    bin: &Path,
    tmp: &Path,
    url: &str,
    plan: &Plan,
) -> anyhow::Result<Vec<Figure>> {
    let schema = PgSchema::try_create_in(url).map_err(anyhow::Error::msg)?;
    let floor = floors::postgres_insert_floor(url, schema.name(), plan.secs).await;
    let result = async {
        let floor = floor?;
        let dir = tmp.join("postgres");
        init_dir(bin, &dir)?;
        let (server, addr) = start_server(bin, &dir, &["--database-url".into(), schema.url()])?;
        let conn =
            Connection::connect(&client_config(&addr, &dir.join("ca.pem"), Transport::Quic)?)
                .await?;
        register_users(&conn, plan.users).await?;
        let sessions = Arc::new(login_users(&conn, plan.users, plan.users).await?);
        let mut out = Vec::new();
        for in_flight in [16usize, 256] {
            let (load, cpu) =
                store_load(server.pid(), &sessions, "pg", in_flight, plan.secs).await?;
            out.push(
                Figure::load(
                    format!("Postgres: durable store, {in_flight} in flight"),
                    load,
                )
                .cpu(cpu)
                .floor("one INSERT + commit alone, /s", floor),
            );
        }
        conn.shutdown().await;
        drop(server);
        anyhow::Ok(out)
    }
    .await;
    drop(schema);
    result
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

/// Times every step of a failed login (`LoginStart`: lookup, OPAQUE evaluation, guess
/// count; then `LoginFinish` with a bad KE3 or `LoginAbort`: the failure recorded) for a
/// registered user and for an unknown one, interleaved on one connection, and prints the
/// distributions side by side.
async fn time_enumeration(bin: &Path, rounds: usize) -> anyhow::Result<()> {
    use keyserver_protocol::{Request, Response, handshake::login};
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("data");
    keyserver_tests::try_init(bin, &dir)?;
    // No lockout and no rate limit during the measurement: both would change the path taken.
    std::fs::write(
        dir.join("keyserver.toml"),
        "max_failed_logins = 1000\nhandshakes_per_second_per_address = 1000000\nhandshake_burst_per_address = 1000000\n",
    )?;
    let (_server, addr) = start_server(bin, &dir, &[])?;
    // Every failed attempt counts against its name, and the lockout cannot be set beyond
    // 1000: spread the attempts over enough names that none of them locks.
    const ATTEMPTS_PER_NAME: usize = 500;
    let names = (rounds * 2).div_ceil(ATTEMPTS_PER_NAME);
    for k in 0..names {
        let (conn, _s) = session(
            &addr,
            &dir.join("ca.pem"),
            Transport::Quic,
            &format!("exists-{k}"),
        )
        .await?;
        drop(conn);
    }
    let ca = local_client::connect::load_ca(&dir.join("ca.pem"))?;
    let link = local_client::connect::QuicLink::connect(
        addr.parse()?,
        "localhost",
        local_client::connect::tls_config(&ca)?,
    )
    .await?;
    let pw = SecretBytes::new(b"wrong guess".to_vec());
    // Each failed login path, timed request by request: LoginStart, then either a bad KE3
    // (LoginFinish) or the client's LoginAbort after a wrong password.
    let call = |req: Request| {
        let link = &link;
        async move {
            let t = Instant::now();
            let resp = link
                .call(&req.encode())
                .await
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            anyhow::Ok((t.elapsed(), Response::decode(&resp)?, resp.len()))
        }
    };
    let mut times: [[Vec<Duration>; 3]; 2] = Default::default();
    let mut sizes = [[0usize; 3]; 2];
    for i in 0..rounds * 4 {
        let who = i % 2;
        let k = i / 2 / ATTEMPTS_PER_NAME;
        let user = UserName::new(&if who == 0 {
            format!("exists-{k}")
        } else {
            format!("does-not-exist-{k}")
        })?;
        let (_, ke1) = login::start(&mut rand::rngs::OsRng, &user, &pw)?;
        let (t, resp, size) = call(Request::LoginStart { user, message: ke1 }).await?;
        let Response::LoginStarted { handshake, .. } = resp else {
            bail!("unexpected reply to LoginStart: {resp:?}");
        };
        times[who][0].push(t);
        sizes[who][0] = size;
        let (path, req) = if (i / 2) % 2 == 0 {
            let bad_ke3 = keyserver_protocol::codec::Bytes::new(vec![0x17; 64])
                .context("a KE3-sized message")?;
            (
                1,
                Request::LoginFinish {
                    handshake,
                    message: bad_ke3,
                },
            )
        } else {
            (2, Request::LoginAbort { handshake })
        };
        let (t, _, size) = call(req).await?;
        times[who][path].push(t);
        sizes[who][path] = size;
    }
    for t in times.iter_mut().flatten() {
        t.sort();
    }
    println!(
        "Failed logins over one QUIC connection, {rounds} of each path per user, interleaved:"
    );
    for (path, step) in [
        (0, "LoginStart"),
        (1, "LoginFinish, bad KE3"),
        (2, "LoginAbort"),
    ] {
        for (who, label) in [(0, "existing user"), (1, "unknown user")] {
            let t = &times[who][path];
            println!(
                "  {step:<21} {label:<14} p10 {:>7.0} µs  p50 {:>7.0} µs  p90 {:>7.0} µs  p99 {:>7.0} µs  reply {} bytes",
                percentile(t, 0.1),
                percentile(t, 0.5),
                percentile(t, 0.9),
                percentile(t, 0.99),
                sizes[who][path]
            );
        }
    }
    Ok(())
}

/// One line of the `--fleet` table.
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

/// One deployment to measure: a backend and a number of instances.
struct Deployment {
    backend: &'static str,
    instances: usize,
    database_url: Option<String>,
}

/// The earlier per-deployment table: SQLite, and Postgres with one and three instances
/// (`--fleet`; Postgres rows need `--database-url`).
async fn fleet(args: &Args, bin: &Path, secs: f64) -> anyhow::Result<()> {
    let mut deployments = vec![Deployment {
        backend: "sqlite",
        instances: 1,
        database_url: None,
    }];
    if let Some(url) = &args.database_url {
        for instances in [1, 3] {
            deployments.push(Deployment {
                backend: "postgres",
                instances,
                database_url: Some(url.clone()),
            });
        }
    }
    let mut rows = Vec::new();
    for d in &deployments {
        // A fresh schema per deployment, dropped after it.
        let schema = match &d.database_url {
            Some(url) => Some(PgSchema::try_create_in(url).map_err(anyhow::Error::msg)?),
            None => None,
        };
        let d = Deployment {
            backend: d.backend,
            instances: d.instances,
            database_url: schema.as_ref().map(PgSchema::url),
        };
        rows.extend(measure_deployment(bin, &d, secs).await?);
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
    Ok(())
}

/// The session for request `id` of [`measure`] in `--fleet`: worker `w` talks to instance
/// `w % instances`, going round that instance's sessions.
fn fleet_pick(sessions: &[Vec<Session>], id: u64) -> &Session {
    let (w, i) = ((id >> 32) as usize, (id & 0xffff_ffff) as usize);
    let list = &sessions[w % sessions.len()];
    &list[(w / sessions.len() + i) % list.len()]
}

async fn measure_deployment(bin: &Path, d: &Deployment, secs: f64) -> anyhow::Result<Vec<Row>> {
    let tmp = tempfile::tempdir()?;
    let first = tmp.path().join("instance-0");
    keyserver_tests::try_init(bin, &first)?;
    let mut servers = Vec::new();
    for i in 0..d.instances {
        let dir = tmp.path().join(format!("instance-{i}"));
        if i > 0 {
            keyserver_tests::copy_data_dir(&first, &dir);
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
        // One connection per instance with 16 sessions (16 accounts) on it; the requests
        // in flight are spread over the instances, each going round its instance's
        // sessions (one account would reach its secret quota).
        let mut per_instance = Vec::new();
        for (i, (_, addr)) in servers.iter().enumerate() {
            let conn = Connection::connect(&client_config(addr, &ca, transport)?).await?;
            let mut list = Vec::new();
            for u in 0..16 {
                let user = UserName::new(format!("bench-{tname}-{i}-{u}"))?;
                conn.register(&user, &password()).await?;
                list.push(conn.login(&user, &password()).await?);
            }
            per_instance.push(list);
        }
        let sessions: Arc<Vec<Vec<Session>>> = Arc::new(per_instance);
        let name = SecretName::new("k")?;
        for s in sessions.iter().flatten() {
            s.store(&name, &secret, false).await?;
        }
        for in_flight in [1usize, 16, 256] {
            let (ss, n2) = (sessions.clone(), name.clone());
            let Load {
                requests,
                per_second,
                p50_us,
                p99_us,
            } = measure(in_flight, secs, move |id| {
                let (s, n) = (fleet_pick(&ss, id).clone(), n2.clone());
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
            let Load {
                requests,
                per_second,
                p50_us,
                p99_us,
            } = measure(in_flight, secs, move |id| {
                let (s, sec) = (fleet_pick(&ss, id).clone(), sec.clone());
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
