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

/// A running `keyserver` process.
pub struct Server {
    child: Option<Child>,
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
        let mut cmd = Command::new(bin("keyserver"));
        cmd.arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(args);
        cmd.env("KEYSERVER_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn keyserver");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(l)) = lines.next() {
                let _ = tx.send(l);
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!("keyserver did not print its listening line within 60 s");
            }
        };
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("quic="))
            .unwrap_or_else(|| panic!("no quic= in {line:?}"))
            .to_string();
        let tcp_addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("tcp="))
            .unwrap_or_else(|| panic!("no tcp= in {line:?}"))
            .to_string();
        Self {
            child: Some(child),
            addr,
            tcp_addr,
            line,
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let st = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(st.success());
        wait_timeout(&mut child, Duration::from_secs(40))
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A client for this server with its CA.
    pub fn client(&self) -> Client {
        Client {
            server: self.addr.clone(),
            ca: self.data_dir.join("ca.pem"),
            server_name: None,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn wait_timeout(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
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
    /// Creates the schema.
    pub fn create() -> Option<Self> {
        let Ok(base) = std::env::var("KEYSERVER_TEST_DATABASE_URL") else {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: Postgres end-to-end test: KEYSERVER_TEST_DATABASE_URL is not set"
            );
            return None;
        };
        let name = format!("ks_e2e_{:016x}", rand::random::<u64>());
        pg_exec(&base, &format!("CREATE SCHEMA {name}"));
        Some(Self { base, name })
    }

    /// A database URL whose connections use this schema.
    pub fn url(&self) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{sep}options[search_path]={}", self.base, self.name)
    }

    /// The base URL (the test database itself).
    pub fn base(&self) -> &str {
        &self.base
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        pg_exec(
            &self.base,
            &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name),
        );
    }
}

/// Runs one SQL statement on `url` (on a runtime of its own, usable from any test).
pub fn pg_exec(url: &str, sql: &str) {
    let (url, sql) = (url.to_string(), sql.to_string());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&url)
                .await
                .expect("KEYSERVER_TEST_DATABASE_URL is set but Postgres is unreachable");
            sqlx::query(&sql).execute(&mut c).await.unwrap();
        });
    })
    .join()
    .unwrap();
}

/// Runs `keyserver init` into `dir`.
pub fn init_data_dir(dir: &Path) {
    let out = Command::new(bin("keyserver"))
        .arg("init")
        .arg("--data-dir")
        .arg(dir)
        .output()
        .expect("keyserver init");
    assert!(out.status.success(), "{out:?}");
}

/// Copies a data dir (the files only), as an operator provisions fleet instances.
pub fn copy_data_dir(from: &Path, to: &Path) {
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
