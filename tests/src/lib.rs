#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_used,
    clippy::manual_let_else,
    clippy::cast_possible_truncation,
    reason = "test harness: a panic is how a test fails"
)]
//! Harness for end-to-end tests: starts the real `keyserver` binary on port 0 in a fresh
//! data dir, reads the address it prints, and runs the real `local-client` binary against
//! it. Every process is killed when its guard drops, so a failing test leaves nothing
//! running.
//!
//! The binaries are the ones `cargo test --workspace` builds next to the test executables
//! (`target/<profile>/`); `KEYSERVER_BIN` and `LOCAL_CLIENT_BIN` override them.

pub mod kms_double;
#[cfg(test)]
mod layering;
#[cfg(test)]
mod threat_model;

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::Duration,
};

/// Path of a workspace binary.
pub fn bin(name: &str) -> PathBuf {
    let var = format!("{}_BIN", name.to_uppercase().replace('-', "_"));
    if let Some(p) = std::env::var_os(&var) {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test-exe> -> target/<profile>/<name>
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} is missing: run the end-to-end tests with `cargo test --workspace`, which builds it (or set {var})",
        p.display()
    );
    p
}

/// A child process, killed (and reaped) when dropped, so that a failing test or benchmark
/// leaves nothing running.
#[derive(Debug)]
pub struct Process {
    child: Option<Child>,
}

impl Process {
    /// Spawns `cmd` with stdout piped and waits at most `timeout` for the first line it
    /// prints; the rest of its stdout is drained so that it never blocks on a full pipe.
    pub fn spawn_and_read_line(
        cmd: &mut Command,
        timeout: Duration,
    ) -> std::io::Result<(Self, String)> {
        let mut child = cmd.stdout(Stdio::piped()).spawn()?;
        let stdout = child.stdout.take();
        let mut process = Self { child: Some(child) };
        let stdout = stdout.ok_or_else(|| std::io::Error::other("no stdout"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(l)) = lines.next() {
                let _ = tx.send(l);
            }
            for _ in lines {}
        });
        match rx.recv_timeout(timeout) {
            Ok(line) => Ok((process, line)),
            Err(_) => {
                process.kill();
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the child printed no line within {timeout:?}"),
                ))
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits (at most `limit`) for the exit status.
    pub fn terminate(&mut self, limit: Duration) -> std::io::Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| std::io::Error::other("not running"))?;
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        let start = std::time::Instant::now();
        loop {
            if let Some(st) = child.try_wait()? {
                return Ok(st);
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the process did not exit within {limit:?}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The word `key=VALUE` of a listening line.
pub fn listening(line: &str, key: &str) -> Option<String> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
}

/// Runs `keyserver init --data-dir DIR` with the binary `bin`.
pub fn try_init(bin: &Path, dir: &Path) -> std::io::Result<()> {
    let out = Command::new(bin)
        .arg("init")
        .arg("--data-dir")
        .arg(dir)
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "keyserver init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

/// A running `keyserver` process.
pub struct Server {
    process: Process,
    /// The QUIC address it listens on.
    pub addr: String,
    /// The TLS-over-TCP address it listens on.
    pub tcp_addr: String,
    /// The whole `listening` line.
    pub line: String,
    /// Its data dir.
    pub data_dir: PathBuf,
}

impl Server {
    /// Starts `keyserver --data-dir DIR --listen 127.0.0.1:0 ARGS…` and waits for its
    /// `listening` line.
    pub fn start(data_dir: &Path, args: &[&str]) -> Self {
        Self::start_env(data_dir, args, &[])
    }

    /// As [`Self::start`], with extra environment variables.
    pub fn start_env(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::try_start(&bin("keyserver"), data_dir, args, env)
            .unwrap_or_else(|e| panic!("keyserver did not start: {e}"))
    }

    /// Starts the binary `bin` as [`Self::start_env`] does, and says why if it cannot.
    pub fn try_start(
        bin: &Path,
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> std::io::Result<Self> {
        let mut cmd = Command::new(bin);
        cmd.arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(args);
        cmd.env("KEYSERVER_LOG", "warn")
            .stderr(Stdio::inherit())
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (process, line) = Process::spawn_and_read_line(&mut cmd, Duration::from_secs(60))?;
        let field = |key| {
            listening(&line, key)
                .ok_or_else(|| std::io::Error::other(format!("no {key}= in {line:?}")))
        };
        Ok(Self {
            addr: field("quic")?,
            tcp_addr: field("tcp")?,
            process,
            line,
            data_dir: data_dir.to_path_buf(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.process
            .terminate(Duration::from_secs(40))
            .expect("the server exits after SIGTERM")
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// A client for this server with its CA.
    pub fn client(&self) -> Client {
        Client {
            server: self.addr.clone(),
            ca: self.data_dir.join("ca.pem"),
            server_name: None,
            state_dir: self.data_dir.with_extension("client-state"),
        }
    }
}

/// What a `local-client` run produced.
#[derive(Debug)]
pub struct Output {
    /// Exit code (-1 if killed by a signal).
    pub code: i32,
    /// Raw stdout.
    pub stdout: Vec<u8>,
    /// Stderr as text.
    pub stderr: String,
}

impl Output {
    /// Stdout as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Stdout as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// Asserts success and returns self.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "expected success, got {self:?}");
        self
    }
}

/// Runs `local-client` against one server.
#[derive(Clone, Debug)]
pub struct Client {
    /// `--server`.
    pub server: String,
    /// `--ca`.
    pub ca: PathBuf,
    /// `--server-name`, if not the default.
    pub server_name: Option<String>,
    /// `--state-dir`: what this client (this "device") remembers of accounts.
    pub state_dir: PathBuf,
}

impl Client {
    /// Runs `local-client ARGS` with `KEYSERVER_PASSWORD=password` (unless `None`) and
    /// `stdin` as standard input.
    pub fn run(
        &self,
        args: &[&str],
        password: Option<&str>,
        env: &[(&str, &str)],
        stdin: &[u8],
    ) -> Output {
        let mut cmd = Command::new(bin("local-client"));
        cmd.args(args)
            .arg("--server")
            .arg(&self.server)
            .arg("--ca")
            .arg(&self.ca);
        if let Some(n) = &self.server_name {
            cmd.args(["--server-name", n]);
        }
        cmd.arg("--state-dir").arg(&self.state_dir);
        cmd.env_remove("KEYSERVER_PASSWORD")
            .env_remove("KEYSERVER_NEW_PASSWORD");
        if let Some(p) = password {
            cmd.env("KEYSERVER_PASSWORD", p);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn local-client");
        let mut input = child.stdin.take().expect("stdin");
        let data = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&data);
        });
        let out = child.wait_with_output().expect("local-client output");
        let _ = writer.join();
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The same client with its own state directory: another device.
    pub fn device(&self, state_dir: &Path) -> Self {
        Self {
            state_dir: state_dir.to_path_buf(),
            ..self.clone()
        }
    }

    /// Shorthand: run with a password and no stdin.
    pub fn with_password(&self, password: &str, args: &[&str]) -> Output {
        self.run(args, Some(password), &[], b"")
    }
}

/// Writes `bytes` to a new file in `dir` and returns its path as a string.
pub fn file(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write");
    p.to_string_lossy().into_owned()
}

/// Random bytes.
pub fn random_bytes(n: usize) -> Vec<u8> {
    // A simple xorshift seeded from the clock: enough to make every byte value appear;
    // not for keys.
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A fresh Postgres schema for one test, dropped at the end; `None` (said loudly) when
/// `KEYSERVER_TEST_DATABASE_URL` is not set.
pub struct PgSchema {
    base: String,
    name: String,
}

impl PgSchema {
    /// Creates a schema in the database of `KEYSERVER_TEST_DATABASE_URL`; `None`, said
    /// loudly on stderr (past the test harness's capture), when it is not set.
    pub fn create() -> Option<Self> {
        let Ok(base) = std::env::var("KEYSERVER_TEST_DATABASE_URL") else {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: Postgres test: KEYSERVER_TEST_DATABASE_URL is not set"
            );
            return None;
        };
        Some(
            Self::try_create_in(&base)
                .expect("KEYSERVER_TEST_DATABASE_URL is set but Postgres is unusable"),
        )
    }

    /// Creates a schema in the database at `base`.
    pub fn try_create_in(base: &str) -> Result<Self, String> {
        let name = format!("ks_scratch_{:016x}", rand::random::<u64>());
        try_pg_exec(base, &format!("CREATE SCHEMA {name}"))?;
        Ok(Self {
            base: base.to_string(),
            name,
        })
    }

    /// A database URL whose connections use this schema.
    pub fn url(&self) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{sep}options[search_path]={}", self.base, self.name)
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The base URL (the test database itself).
    pub fn base(&self) -> &str {
        &self.base
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let _ = try_pg_exec(
            &self.base,
            &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name),
        );
    }
}

/// Runs one SQL statement on `url` (on a runtime of its own, usable from any test).
pub fn pg_exec(url: &str, sql: &str) {
    try_pg_exec(url, sql).unwrap_or_else(|e| panic!("{e}"));
}

/// Runs one SQL statement on `url`, on a thread and runtime of its own (usable from sync
/// and async code alike).
pub fn try_pg_exec(url: &str, sql: &str) -> Result<(), String> {
    let (url, sql) = (url.to_string(), sql.to_string());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&url)
                .await
                .map_err(|e| format!("cannot connect to Postgres: {e}"))?;
            sqlx::query(&sql)
                .execute(&mut c)
                .await
                .map_err(|e| format!("{sql}: {e}"))?;
            Ok(())
        })
    })
    .join()
    .map_err(|_| "the Postgres thread failed".to_string())?
}

/// Every row of every table of the schema `url` names, as text (`bytea` in hex): what an
/// operator reading the database sees.
pub fn pg_dump_text(url: &str) -> String {
    let url = url.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&url).await.expect("Postgres");
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::TEXT FROM information_schema.tables \
                 WHERE table_schema = current_schema()",
            )
            .fetch_all(&mut c)
            .await
            .expect("the tables");
            let mut out = String::new();
            for t in tables {
                let rows: Vec<String> =
                    sqlx::query_scalar(&format!("SELECT row_to_json(t)::TEXT FROM \"{t}\" t"))
                        .fetch_all(&mut c)
                        .await
                        .expect("the rows");
                for r in rows {
                    out.push_str(&r);
                    out.push('\n');
                }
            }
            out
        })
    })
    .join()
    .expect("the Postgres thread failed")
}

/// Runs one SQL statement on the SQLite database `db` while a server may be using it (it
/// waits for the server's write lock).
pub fn sqlite_exec(db: &Path, sql: &str) {
    let (db, sql) = (db.to_path_buf(), sql.to_string());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            use sqlx::{ConnectOptions, sqlite::SqliteConnectOptions};
            let mut c = SqliteConnectOptions::new()
                .filename(&db)
                .busy_timeout(Duration::from_secs(10))
                .connect()
                .await
                .unwrap_or_else(|e| panic!("cannot open {}: {e}", db.display()));
            sqlx::query(&sql)
                .execute(&mut c)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        });
    })
    .join()
    .expect("the SQLite thread failed");
}

/// Runs `keyserver init` into `dir`.
pub fn init_data_dir(dir: &Path) {
    try_init(&bin("keyserver"), dir).unwrap_or_else(|e| panic!("{e}"));
}

/// The default file of data dir `dir`'s setup key: next to it (`<dir>.setup.key`).
pub fn setup_key_of(dir: &Path) -> PathBuf {
    let mut name = dir
        .file_name()
        .expect("a data dir has a name")
        .to_os_string();
    name.push(".setup.key");
    dir.with_file_name(name)
}

/// Copies a data dir (the files only) and its setup key, as an operator provisions fleet
/// instances.
pub fn copy_data_dir(from: &Path, to: &Path) {
    std::fs::copy(setup_key_of(from), setup_key_of(to)).unwrap();
    std::fs::create_dir_all(to).unwrap();
    for f in std::fs::read_dir(from).unwrap() {
        let f = f.unwrap();
        if f.file_type().unwrap().is_file()
            && !f.file_name().to_string_lossy().starts_with("keyserver.db")
        {
            std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
        }
    }
}

/// A local AWS KMS emulator (moto's server, a real HTTP service that checks SigV4 when asked
/// to), started for one test on a free loopback port and stopped when dropped. Its
/// `moto_server` is found through `KEYSERVER_TEST_MOTO_SERVER` (`.ci/run` installs it in a
/// virtual environment and sets it); without it the KMS tests say loudly that they were
/// skipped, and fail in CI (`CI` set).
pub struct Moto {
    process: Child,
    python: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

/// The region the KMS tests use.
pub const KMS_REGION: &str = "eu-west-1";

impl Moto {
    /// Starts an emulator; `None` (said loudly) when none is installed.
    pub fn start() -> Option<Self> {
        Self::start_with(&[])
    }

    /// Starts an emulator that checks signatures and credentials after the first
    /// `free_calls` calls (moto's `INITIAL_NO_AUTH_ACTION_COUNT`).
    pub fn start_with_auth(free_calls: u32) -> Option<Self> {
        Self::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", &free_calls.to_string())])
    }

    fn start_with(env: &[(&str, &str)]) -> Option<Self> {
        let Some(server) = std::env::var_os("KEYSERVER_TEST_MOTO_SERVER") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "KEYSERVER_TEST_MOTO_SERVER is not set in CI: the KMS suite cannot run"
            );
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: KMS test: KEYSERVER_TEST_MOTO_SERVER (the moto_server to run) is not set"
            );
            return None;
        };
        let server = PathBuf::from(server);
        let python = server.with_file_name("python");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut cmd = Command::new(&server);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let process = cmd.spawn().expect("moto_server starts");
        let endpoint = format!("http://127.0.0.1:{port}");
        let moto = Self {
            process,
            python,
            endpoint,
        };
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(moto);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("moto_server did not listen on {port} within 30 s");
    }

    /// Runs `script` (Python, with `kms`, `iam` boto3 clients of this emulator and
    /// `import json`) and returns what it prints.
    pub fn admin(&self, script: &str) -> String {
        let prelude = format!(
            "import boto3, json, base64\n\
             kw = dict(endpoint_url='{}', region_name='{KMS_REGION}', \
             aws_access_key_id='testing', aws_secret_access_key='testing')\n\
             kms = boto3.client('kms', **kw)\n\
             iam = boto3.client('iam', **kw)\n",
            self.endpoint
        );
        let out = Command::new(&self.python)
            .arg("-c")
            .arg(format!("{prelude}{script}"))
            .output()
            .expect("python runs");
        assert!(
            out.status.success(),
            "admin script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A new symmetric KMS key; its ARN.
    pub fn create_key(&self) -> String {
        self.admin("print(kms.create_key(Description='keyserver test')['KeyMetadata']['Arn'])")
    }

    /// Disables key `arn`.
    pub fn disable_key(&self, arn: &str) {
        // moto takes the key id here, not the ARN.
        let id = arn.rsplit('/').next().unwrap_or(arn);
        self.admin(&format!("kms.disable_key(KeyId='{id}')"));
    }

    /// What `wrapped` (base64) decrypts to under `context`, as hex.
    pub fn decrypt(&self, wrapped_b64: &str, context: &[(&str, &str)]) -> String {
        let ctx: serde_json::Map<_, _> = context
            .iter()
            .map(|(k, v)| ((*k).to_string(), serde_json::Value::from(*v)))
            .collect();
        self.admin(&format!(
            "print(kms.decrypt(CiphertextBlob=base64.b64decode('{wrapped_b64}'), \
             EncryptionContext=json.loads('{}'))['Plaintext'].hex())",
            serde_json::Value::Object(ctx)
        ))
    }

    /// An IAM user allowed everything, and its access key: (id, secret).
    pub fn iam_credentials(&self) -> (String, String) {
        let out = self.admin(
            "iam.create_user(UserName='keyserver')\n\
             iam.put_user_policy(UserName='keyserver', PolicyName='all', PolicyDocument=json.dumps(\
             {'Version': '2012-10-17', 'Statement': [{'Effect': 'Allow', 'Action': '*', 'Resource': '*'}]}))\n\
             k = iam.create_access_key(UserName='keyserver')['AccessKey']\n\
             print(k['AccessKeyId'], k['SecretAccessKey'])",
        );
        let (id, secret) = out.split_once(' ').expect("an access key");
        (id.to_string(), secret.to_string())
    }

    /// Stops the emulator (KMS unreachable from now on).
    pub fn stop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The first column of the first row of `sql` on the SQLite database `db`, as bytes.
pub fn sqlite_blob(db: &Path, sql: &str) -> Vec<u8> {
    let (db, sql) = (db.to_path_buf(), sql.to_string());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            use sqlx::{ConnectOptions, Row, sqlite::SqliteConnectOptions};
            let mut c = SqliteConnectOptions::new()
                .filename(&db)
                .busy_timeout(Duration::from_secs(10))
                .connect()
                .await
                .unwrap_or_else(|e| panic!("cannot open {}: {e}", db.display()));
            let row = sqlx::query(&sql)
                .fetch_one(&mut c)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            row.get::<Vec<u8>, _>(0)
        })
    })
    .join()
    .expect("the SQLite thread failed")
}

/// The real AWS Nitro vectors beside the project (`../shared/nitro-vectors`, or
/// `$KEYSERVER_NITRO_VECTORS`), checked against their `SHA256SUMS`. Missing: a loud failure
/// where `KEYSERVER_REQUIRE_VECTORS` is set (CI), a loud `SKIPPED` and `None` elsewhere.
pub fn nitro_vectors() -> Option<PathBuf> {
    use sha2::Digest;
    let dir = std::env::var_os("KEYSERVER_NITRO_VECTORS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/nitro-vectors"),
        PathBuf::from,
    );
    let Ok(text) = std::fs::read_to_string(dir.join("SHA256SUMS")) else {
        let msg = format!("SKIPPED: the Nitro vectors are not at {}", dir.display());
        assert!(
            std::env::var_os("KEYSERVER_REQUIRE_VECTORS").is_none(),
            "{msg}"
        );
        // Past the test harness's capture, so that CI can see it.
        let _ = writeln!(std::io::stderr(), "{msg}");
        return None;
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (sum, name) = line.split_once("  ").expect("sha256sum format");
        let bytes = std::fs::read(dir.join(name.trim_start_matches('*')))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let got: String = sha2::Sha256::digest(&bytes)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect();
        assert_eq!(got, sum, "{name} does not match SHA256SUMS");
    }
    Some(dir)
}
