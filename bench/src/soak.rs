//! `--soak SECONDS`: one server under a mixed load for a long time, to see what a short
//! benchmark cannot: errors that come rarely, memory or descriptors that leak, throughput
//! that sinks as tables grow.
//!
//! 200 sessions of 200 users, half over one QUIC connection and half over one TCP
//! connection, each driven by its own worker in a loop: retrieves, stores and deletes (each
//! worker keeps at most [`LIVE_NAMES`] names of its own, so that lists stay short while
//! the database keeps every deleted row), lists, incremental audits (the chain since the
//! verified position, as a long session checks it), logins with a logout, and a few wrong
//! passwords. Every interval (a minute, or a sixth of a short run) it records throughput,
//! errors, and the server's resident memory and open descriptors.
//!
//! It fails (exit 1) on any error, or if memory or descriptors grew past their bound
//! between warm (the end of the second minute, or of the first half of a shorter run: pools,
//! caches and allocator arenas at their working size) and the end.

use std::{
    collections::VecDeque,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use keyserver_protocol::{SecretBytes, SecretName};
use keyserver_tests::PgSchema;
use local_client::{ClientError, Connection, Session, Transport};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::{bench_user, client_config, init_dir, password, register_users, rss_bytes, run_all};

/// Sessions (and users, one session each), half on each transport.
pub(crate) const SESSIONS: usize = 200;
/// Names a worker keeps stored at most: it deletes its oldest before storing past this.
const LIVE_NAMES: usize = 8;
/// When the server counts as warm, seconds into the load (or half of a shorter run). On
/// SQLite its resident memory steps up once, by about 9 MiB of anonymous memory, some 100 s
/// into the load (seen on 2026-12-02, on 2 cores at about 10,000 operations/s), then stays
/// flat: warm is after that step, and the bound below holds from there.
const WARM_SECS: f64 = 120.0;
/// Resident memory may grow this much (fraction) between warm and the end.
pub(crate) const RSS_GROWTH: f64 = 0.25;
/// Open descriptors may grow this much between warm and the end.
pub(crate) const FD_GROWTH: u64 = 16;

/// The operations of the mix, in the order of [`Counts`].
const OPS: [&str; 7] = [
    "retrieve",
    "store",
    "delete",
    "list",
    "audit",
    "login",
    "wrong password",
];

/// One interval's figures.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    /// Seconds since the load started, at the interval's end.
    pub(crate) t: f64,
    /// Operations per second in the interval.
    pub(crate) per_second: f64,
    /// Errors in the interval.
    pub(crate) errors: u64,
    /// Server's resident memory, bytes.
    pub(crate) rss: f64,
    /// Server's open descriptors.
    pub(crate) fds: u64,
}

/// The whole soak.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) backend: &'static str,
    pub(crate) seconds: f64,
    pub(crate) samples: Vec<Sample>,
    /// Operations done, per kind (as [`OPS`]).
    pub(crate) done: [u64; OPS.len()],
    pub(crate) errors: u64,
    /// The first few errors, as the client said them.
    pub(crate) first_errors: Vec<String>,
    /// Memory and descriptors at the start of the load and when warm.
    pub(crate) start: (f64, u64),
    pub(crate) warm: (f64, u64),
}

impl Report {
    fn end(&self) -> (f64, u64) {
        self.samples.last().map_or(self.warm, |s| (s.rss, s.fds))
    }

    /// What went wrong, if anything: errors, or growth past a bound.
    pub(crate) fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.errors > 0 {
            out.push(format!("{} errors", self.errors));
        }
        let ((warm_rss, warm_fds), (end_rss, end_fds)) = (self.warm, self.end());
        if end_rss > warm_rss * (1.0 + RSS_GROWTH) {
            out.push(format!(
                "resident memory grew from {:.1} MiB (warm) to {:.1} MiB, past {:.0}%",
                warm_rss / MIB,
                end_rss / MIB,
                RSS_GROWTH * 100.0
            ));
        }
        if end_fds > warm_fds + FD_GROWTH {
            out.push(format!(
                "open descriptors grew from {warm_fds} (warm) to {end_fds}, past +{FD_GROWTH}"
            ));
        }
        out
    }

    pub(crate) fn print(&self) {
        println!(
            "soak on {}: {:.0} s, {} sessions (half QUIC, half TCP)",
            self.backend, self.seconds, SESSIONS
        );
        println!(
            "| t (s) | ops/s | errors | server RSS (MiB) | open fds |\n| ---: | ---: | ---: | ---: | ---: |"
        );
        println!(
            "| 0 | - | - | {:.1} | {} |",
            self.start.0 / MIB,
            self.start.1
        );
        for s in &self.samples {
            println!(
                "| {:.0} | {} | {} | {:.1} | {} |",
                s.t,
                crate::num(s.per_second),
                s.errors,
                s.rss / MIB,
                s.fds
            );
        }
        let total: u64 = self.done.iter().sum();
        let mix: Vec<String> = OPS
            .iter()
            .zip(self.done)
            .map(|(op, n)| format!("{op} {}", crate::num(n as f64)))
            .collect();
        println!(
            "operations: {} in all ({}); errors: {}",
            crate::num(total as f64),
            mix.join(", "),
            self.errors
        );
        let ((warm_rss, warm_fds), (end_rss, end_fds)) = (self.warm, self.end());
        println!(
            "warm → end: RSS {:.1} → {:.1} MiB (bound +{:.0}%), fds {warm_fds} → {end_fds} (bound +{FD_GROWTH})",
            warm_rss / MIB,
            end_rss / MIB,
            RSS_GROWTH * 100.0
        );
        for e in &self.first_errors {
            println!("error: {e}");
        }
        match self.failures().as_slice() {
            [] => println!("verdict: PASS"),
            f => println!("verdict: FAIL ({})", f.join("; ")),
        }
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "backend": self.backend,
            "seconds": self.seconds,
            "sessions": SESSIONS,
            "start": {"rss": self.start.0, "fds": self.start.1},
            "warm": {"rss": self.warm.0, "fds": self.warm.1},
            "samples": self.samples.iter().map(|s| serde_json::json!({
                "t": s.t, "per_second": s.per_second, "errors": s.errors,
                "rss": s.rss, "fds": s.fds,
            })).collect::<Vec<_>>(),
            "done": OPS.iter().zip(self.done).map(|(op, n)| (op.to_string(), n.into()))
                .collect::<serde_json::Map<String, serde_json::Value>>(),
            "errors": self.errors,
            "failures": self.failures(),
        })
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// Open descriptors of a process.
fn open_fds(pid: u32) -> anyhow::Result<u64> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))
        .context("cannot read the server's descriptors")?
        .count() as u64)
}

/// What the workers share.
struct Shared {
    done: [AtomicU64; OPS.len()],
    errors: AtomicU64,
    first_errors: Mutex<Vec<String>>,
}

impl Shared {
    fn error(&self, op: &str, e: &dyn std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self
            .first_errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if first.len() < 10 {
            first.push(format!("{op}: {e}"));
        }
    }

    fn total(&self) -> u64 {
        self.done.iter().map(|d| d.load(Ordering::Relaxed)).sum()
    }
}

/// Runs the soak for `secs` against a fresh server (SQLite, or Postgres in a scratch schema
/// of `database_url`).
pub(crate) async fn soak(
    bin: &Path,
    secs: f64,
    database_url: Option<&str>,
) -> anyhow::Result<Report> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("soak");
    init_dir(bin, &dir)?;
    let schema = database_url
        .map(|url| PgSchema::try_create_in(url).map_err(anyhow::Error::msg))
        .transpose()?;
    let extra: Vec<String> = schema
        .as_ref()
        .map(|s| vec!["--database-url".into(), s.url()])
        .unwrap_or_default();
    let (server, addr) = crate::start_server(bin, &dir, &extra)?;
    let pid = server.pid();
    let ca = dir.join("ca.pem");
    let quic = Connection::connect(&client_config(&addr, &ca, Transport::Quic)?).await?;
    let tcp = Connection::connect(&client_config(&addr, &ca, Transport::Tcp)?).await?;
    eprintln!("soak: registering {SESSIONS} users and logging in ...");
    register_users(&quic, SESSIONS).await?;
    let half = SESSIONS / 2;
    let mut sessions = Vec::with_capacity(SESSIONS);
    for (conn, parity) in [(&quic, 0), (&tcp, 1)] {
        sessions.extend(
            run_all(conn, half, 32, move |c, i| async move {
                let user = 2 * i + parity;
                let s = c.login(&bench_user(user)?, &password()).await?;
                s.store(
                    &SecretName::new("k")?,
                    &SecretBytes::new(vec![0x5a; 64]),
                    true,
                )
                .await?;
                Ok((user, c, s))
            })
            .await?,
        );
    }

    let shared = Arc::new(Shared {
        done: std::array::from_fn(|_| AtomicU64::new(0)),
        errors: AtomicU64::new(0),
        first_errors: Mutex::new(Vec::new()),
    });
    let start = (rss_bytes(pid)?, open_fds(pid)?);
    let began = Instant::now();
    let deadline = began + Duration::from_secs_f64(secs);
    let mut workers = Vec::with_capacity(SESSIONS);
    for (user, conn, session) in sessions {
        let shared = shared.clone();
        workers.push(tokio::spawn(async move {
            worker(user, conn, session, deadline, &shared).await;
        }));
    }

    eprintln!("soak: {secs:.0} s of mixed load on {addr} ...");
    let interval = if secs >= 120.0 {
        60.0
    } else {
        (secs / 6.0).max(1.0)
    };
    let mut samples = Vec::new();
    let (mut last_ops, mut last_errors, mut last_t) = (0u64, 0u64, 0.0f64);
    loop {
        let next = Duration::from_secs_f64((last_t + interval).min(secs));
        tokio::time::sleep_until((began + next).into()).await;
        let t = began.elapsed().as_secs_f64();
        let (ops, errors) = (shared.total(), shared.errors.load(Ordering::Relaxed));
        let s = Sample {
            t,
            per_second: (ops - last_ops) as f64 / (t - last_t).max(1e-9),
            errors: errors - last_errors,
            rss: rss_bytes(pid)?,
            fds: open_fds(pid)?,
        };
        eprintln!(
            "soak: t={:>5.0} s  {:>8} ops/s  errors {}  RSS {:.1} MiB  fds {}",
            s.t,
            crate::num(s.per_second),
            s.errors,
            s.rss / MIB,
            s.fds
        );
        samples.push(s);
        (last_ops, last_errors, last_t) = (ops, errors, t);
        if t >= secs {
            break;
        }
    }
    for w in workers {
        w.await?;
    }
    quic.shutdown().await;
    tcp.shutdown().await;
    drop(server);
    drop(schema);
    // Warm: after WARM_SECS (or the first half of a shorter run).
    let warm_at = WARM_SECS.min(secs / 2.0);
    let warm = samples
        .iter()
        .find(|s| s.t >= warm_at - 0.5)
        .map_or(start, |s| (s.rss, s.fds));
    let first_errors = shared
        .first_errors
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    Ok(Report {
        backend: if database_url.is_some() {
            "Postgres"
        } else {
            "SQLite"
        },
        seconds: secs,
        samples,
        done: std::array::from_fn(|i| shared.done[i].load(Ordering::Relaxed)),
        errors: shared.errors.load(Ordering::Relaxed),
        first_errors,
        start,
        warm,
    })
}

/// One session's loop until `deadline`: the mix, drawn at random (seeded by the user).
async fn worker(
    user: usize,
    conn: Connection,
    session: Session,
    deadline: Instant,
    shared: &Shared,
) {
    let mut rng = StdRng::seed_from_u64(user as u64);
    let mut live: VecDeque<SecretName> = VecDeque::new();
    let secret = SecretBytes::new(vec![0x5a; 64]);
    let mut n = 0u64;
    let (Ok(k), Ok(name)) = (SecretName::new("k"), bench_user(user)) else {
        shared.error("setup", &"bad name");
        return;
    };
    while Instant::now() < deadline {
        let roll = rng.gen_range(0..100u32);
        let (op, result): (usize, Result<(), String>) = match roll {
            0..35 => (0, session.retrieve(&k).await.map(drop).map_err(text)),
            35..65 => {
                if live.len() >= LIVE_NAMES
                    && let Some(oldest) = live.pop_front()
                {
                    (2, session.delete(&oldest).await.map_err(text))
                } else {
                    n += 1;
                    match SecretName::new(format!("soak-{n}")) {
                        Ok(new) => {
                            let r = session.store(&new, &secret, false).await.map(drop);
                            if r.is_ok() {
                                live.push_back(new);
                            }
                            (1, r.map_err(text))
                        }
                        Err(e) => (1, Err(e.to_string())),
                    }
                }
            }
            65..77 => (3, session.list().await.map(drop).map_err(text)),
            77..90 => (
                4,
                session.check_recent_events().await.map(drop).map_err(text),
            ),
            90..98 => {
                let r = async {
                    let other = conn.login(&name, &password()).await?;
                    other.logout().await
                }
                .await;
                (5, r.map_err(text))
            }
            _ => {
                let wrong = SecretBytes::new(b"not the password".to_vec());
                let r = match conn.login(&name, &wrong).await {
                    Err(ClientError::AuthFailed { .. }) => Ok(()),
                    Err(e) => Err(e.to_string()),
                    Ok(_) => Err("a wrong password logged in".into()),
                };
                (6, r)
            }
        };
        match result {
            Ok(()) => {
                shared.done[op].fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => shared.error(OPS[op], &e),
        }
    }
}

fn text(e: ClientError) -> String {
    e.to_string()
}
