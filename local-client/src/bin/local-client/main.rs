//! `local-client`: the keyserver command-line client. See `local-client --help`.
//!
//! Exit codes: 0 success; 2 usage (an unknown algorithm or a bad key file too); 3
//! authentication failed; 4 no such secret or key; 5 account locked; 6 server unreachable or
//! TLS/certificate failure; 7 name exists; 9 the server went back (its data is older than
//! this client saw before); 8 the server's identity could not be established (attestation);
//! 1 anything else (an export of a key not made exportable too).

mod attest;
mod keys;

use std::{
    io::{BufRead, IsTerminal, Read, Write},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::Context;
use clap::{Parser, Subcommand};
use keyserver_protocol::{
    SecretBytes, SecretName, UserName, audit_chain::AuditPosition, limits::MAX_SECRET,
};
use local_client::{
    ClientConfig, ClientError, Connection, PathCheck, Session, StateDir, Transport,
};
use zeroize::Zeroizing;

#[derive(Debug, Parser)]
#[command(
    name = "local-client",
    version,
    about = "Store and retrieve secrets on a keyserver; your password never leaves this machine."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    /// Server address, HOST:PORT.
    #[arg(
        long,
        global = true,
        env = "KEYSERVER_ADDR",
        default_value = "127.0.0.1:7443"
    )]
    server: String,
    /// The CA that must have signed the server's certificate (PEM).
    #[arg(
        long,
        global = true,
        env = "KEYSERVER_CA",
        default_value = "./keyserver-data/ca.pem"
    )]
    ca: PathBuf,
    /// The name the server's certificate must carry.
    #[arg(
        long,
        global = true,
        env = "KEYSERVER_SERVER_NAME",
        default_value = "localhost"
    )]
    server_name: String,
    /// Transport: quic or tcp (TLS 1.3 over TCP, same port).
    #[arg(
        long,
        global = true,
        env = "KEYSERVER_TRANSPORT",
        default_value = "quic"
    )]
    transport: Transport,
    /// Read the password from the first line of stdin (and, for change-password, the new
    /// one from the second). Without it: $KEYSERVER_PASSWORD, else a prompt.
    #[arg(long, global = true)]
    password_stdin: bool,
    /// Where this client remembers what it saw of each account (audit position, versions),
    /// to catch a server that goes back [default: $XDG_STATE_HOME/keyserver, else
    /// ~/.local/state/keyserver].
    #[arg(long, global = true, env = "KEYSERVER_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// The PCRs the server's Nitro enclave must attest: a JSON object {"0": hex, "1": hex,
    /// "2": hex} (and optionally "8"), as `nitro-cli describe-eif` gives them. With it, every
    /// connection first checks the server's attestation, bound to its TLS key, and --ca is
    /// not used (exit 8 when the server's identity cannot be established).
    #[arg(long, global = true, env = "KEYSERVER_EXPECT_PCRS")]
    expect_pcrs: Option<PathBuf>,
    /// The root an attestation must chain to (PEM or DER) [default: the AWS Nitro root,
    /// pinned by its fingerprint].
    #[arg(long, global = true, env = "KEYSERVER_ATTESTATION_ROOT")]
    attestation_root: Option<PathBuf>,
    /// Accept an enclave in debug mode (PCR0, 1 and 2 zero), whose memory its host can read.
    #[arg(long, global = true)]
    allow_debug_enclave: bool,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create an account.
    Register {
        /// The account's user name [env: KEYSERVER_USER].
        #[arg(long, env = "KEYSERVER_USER")]
        user: String,
    },
    /// Store a secret from a file (or stdin with `--file -`).
    Store {
        /// The account's user name [env: KEYSERVER_USER].
        #[arg(long, env = "KEYSERVER_USER")]
        user: String,
        /// The secret's name.
        #[arg(long)]
        name: String,
        /// File holding the secret; `-` for stdin.
        #[arg(long)]
        file: PathBuf,
        /// Store a new version if the name exists.
        #[arg(long)]
        replace: bool,
    },
    /// Write a secret's bytes to stdout.
    Retrieve {
        /// The account's user name [env: KEYSERVER_USER].
        #[arg(long, env = "KEYSERVER_USER")]
        user: String,
        /// The secret's name.
        #[arg(long)]
        name: String,
    },
    /// List secrets.
    List {
        /// The account's user name [env: KEYSERVER_USER].
        #[arg(long, env = "KEYSERVER_USER")]
        user: String,
        /// One JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Delete a secret.
    Delete {
        /// The account's user name [env: KEYSERVER_USER].
        #[arg(long, env = "KEYSERVER_USER")]
        user: String,
        /// The secret's name.
        #[arg(long)]
        name: String,
    },
    /// Show the audit log and check its hash chain.
    Audit {
        /// The account's user name [env: KEYSERVER_USER].
        #[arg(long, env = "KEYSERVER_USER")]
        user: String,
        /// One JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Change the password (secrets stay as they are; every other session ends).
    ChangePassword {
        /// The account's user name [env: KEYSERVER_USER].
        #[arg(long, env = "KEYSERVER_USER")]
        user: String,
    },
    /// Replace the storage key and seal every secret again under the new one (for when the
    /// old key may have been seen); every other session ends. Safe to interrupt: nothing
    /// changes unless it finishes.
    RotateKey {
        /// The account's user name [env: KEYSERVER_USER].
        #[arg(long, env = "KEYSERVER_USER")]
        user: String,
    },
    /// Keys the server holds and signs with: generate, import, sign, public, list, export,
    /// delete. Their private keys never reach this machine (unless made exportable and
    /// exported); every use is in the audit log.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCmd,
    },
    /// AWS Nitro attestation documents.
    Attestation {
        #[command(subcommand)]
        command: attest::AttestationCmd,
    },
    /// Print shell completions for bash, zsh, fish, elvish or powershell.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// A failure and its exit code.
struct Failure {
    code: u8,
    message: String,
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        let code = match &e {
            ClientError::AuthFailed { .. } => 3,
            ClientError::NotFound => 4,
            ClientError::Locked { .. } => 5,
            ClientError::Unreachable(_) | ClientError::Tls(_) => 6,
            ClientError::NameExists => 7,
            ClientError::NotAttested(_) => attest::NOT_ATTESTED,
            ClientError::Rollback(_) => 9,
            ClientError::InvalidInput(_) => 2,
            _ => 1,
        };
        let message = match &e {
            ClientError::Rollback(_) => format!(
                "{e}.\nNothing was output and nothing was changed here. The server's data is older \
                 than this client saw before, or differs from it: contact the server's operator. \
                 `local-client --state-dir <an empty directory> audit --user <user>` shows the \
                 log as the server shows it now. This client's memory of the account was kept \
                 as it was."
            ),
            _ => e.to_string(),
        };
        Self { code, message }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Self {
            code: 1,
            message: format!("{e:#}"),
        }
    }
}

fn usage(message: impl Into<String>) -> Failure {
    Failure {
        code: 2,
        message: message.into(),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    if let Cmd::Completions { shell } = cli.command {
        let mut command = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut command, "local-client", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("local-client: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("local-client: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn user_name(s: &str) -> Result<UserName, Failure> {
    UserName::new(s).map_err(|e| usage(format!("invalid user name: {e}")))
}

fn secret_name(s: &str) -> Result<SecretName, Failure> {
    SecretName::new(s).map_err(|e| usage(format!("invalid secret name: {e}")))
}

/// Longest password line read from stdin, newline included.
const MAX_PASSWORD_LINE: usize = 4096;

/// Where passwords come from, in order: environment, stdin lines, terminal prompt.
struct Passwords {
    stdin_lines: Option<Vec<Zeroizing<String>>>,
}

impl Passwords {
    fn new(password_stdin: bool) -> Result<Self, Failure> {
        if !password_stdin {
            return Ok(Self { stdin_lines: None });
        }
        let mut lines = Vec::new();
        let stdin = std::io::stdin();
        let mut lock = stdin.lock();
        for i in 0..2 {
            let mut line = Zeroizing::new(String::new());
            // Bounded: a password line longer than 4 KiB is a mistake, not a password. It
            // is refused whole: cut at the limit, its rest would be read as the next line
            // (the *new* password of change-password).
            let n = (&mut lock)
                .take(MAX_PASSWORD_LINE as u64 + 1)
                .read_line(&mut line)
                .map_err(|e| usage(format!("cannot read stdin: {e}")))?;
            if n == 0 {
                break;
            }
            if !line.ends_with('\n') && n > MAX_PASSWORD_LINE {
                return Err(usage(format!(
                    "--password-stdin: line {} is longer than {MAX_PASSWORD_LINE} bytes",
                    i + 1
                )));
            }
            while line.ends_with('\n') || line.ends_with('\r') {
                line.pop();
            }
            lines.push(line);
        }
        Ok(Self {
            stdin_lines: Some(lines),
        })
    }

    fn get(&self, env: &str, index: usize, prompt: &str) -> Result<SecretBytes, Failure> {
        if let Ok(v) = std::env::var(env) {
            return Ok(SecretBytes::new(v.into_bytes()));
        }
        if let Some(lines) = &self.stdin_lines {
            return lines
                .get(index)
                .map(|l| SecretBytes::new(l.as_bytes().to_vec()))
                .ok_or_else(|| {
                    usage(format!(
                        "--password-stdin: line {} of stdin is missing",
                        index + 1
                    ))
                });
        }
        if !std::io::stdin().is_terminal() {
            return Err(usage(format!(
                "no password: set {env}, use --password-stdin, or run in a terminal"
            )));
        }
        let p = Zeroizing::new(
            rpassword::prompt_password(prompt)
                .map_err(|e| usage(format!("cannot read the password: {e}")))?,
        );
        Ok(SecretBytes::new(p.as_bytes().to_vec()))
    }

    /// A new password: asked twice on a terminal.
    fn new_password(&self, env: &str, index: usize, prompt: &str) -> Result<SecretBytes, Failure> {
        let p = self.get(env, index, prompt)?;
        if std::env::var(env).is_err() && self.stdin_lines.is_none() {
            let again = self.get(env, index, "Repeat it: ")?;
            if again.expose_secret() != p.expose_secret() {
                return Err(usage("the passwords do not match"));
            }
        }
        if p.is_empty() {
            return Err(usage("the password is empty"));
        }
        Ok(p)
    }
}

async fn connect(cli: &Cli) -> Result<Connection, Failure> {
    let mut config = match &cli.expect_pcrs {
        // An attested server: its enclave's measurements vouch for its TLS key, not a CA.
        Some(pcrs) => ClientConfig::attested(
            &cli.server,
            local_client::attestation::Policy {
                pcrs: local_client::attestation::read_expected_pcrs(pcrs)?,
                root: cli
                    .attestation_root
                    .as_deref()
                    .map(local_client::attestation::read_root)
                    .transpose()?,
                allow_debug: cli.allow_debug_enclave,
            },
        ),
        None => ClientConfig::new(&cli.server, &cli.ca).map_err(|e| match e {
            ClientError::InvalidInput(m) => Failure {
                code: 6,
                message: m,
            },
            other => other.into(),
        })?,
    };
    config
        .server_name(&cli.server_name)
        .transport(cli.transport);
    Ok(Connection::connect(&config).await?)
}

/// A logged-in account, checked against what this client remembers of it.
struct Account {
    conn: Connection,
    session: Session,
    password: SecretBytes,
    states: Option<StateDir>,
}

/// Logs in and gives the session what this client remembers of the account (the password
/// is kept: a password change and a key rotation prove it again).
async fn login(cli: &Cli, pw: &Passwords, user: &UserName) -> Result<Account, Failure> {
    let password = pw.get("KEYSERVER_PASSWORD", 0, &format!("Password for {user}: "))?;
    let conn = connect(cli).await?;
    let session = conn.login(user, &password).await?;
    if session.epoch() == 0 {
        eprintln!(
            "local-client: warning: this account was registered by an older server, whose \
             password guessing key is the same for everyone who ever asked to register the \
             name; run change-password to give it a key of its own"
        );
    }
    let states = cli
        .state_dir
        .clone()
        .or_else(local_client::state::default_state_dir)
        .map(StateDir::new);
    let account = Account {
        conn,
        session,
        password,
        states,
    };
    let remembered = match &account.states {
        Some(states) => states
            .open(&account.session.server_id(), user)
            .and_then(|state| account.session.remember(state)),
        None => {
            eprintln!(
                "local-client: warning: no state directory (set --state-dir or HOME): this \
                 client remembers nothing of the account and cannot tell if the server goes back"
            );
            Ok(())
        }
    };
    let checked = match remembered {
        // Nothing verified yet (a new device): start from the newest checkpoint another
        // device of the account left, if any, rather than trust the server blindly.
        Ok(()) if account.session.verified_position().is_none() => {
            account.session.start_from_checkpoint().await.map(|_| ())
        }
        other => other,
    };
    if let Err(e) = checked {
        account.logout().await;
        return Err(e.into());
    }
    Ok(account)
}

/// After a verified audit: leaves a checkpoint of the chain's end for the account's other
/// devices; returns it. Not for a history trusted as first seen: a checkpoint vouches for
/// what this client verified against something it knew.
async fn leave_checkpoint(
    session: &Session,
    report: &local_client::AuditReport,
) -> Result<Option<AuditPosition>, ClientError> {
    let Some(last) = report
        .events
        .last()
        .filter(|_| report.verification.is_ok() && report.pinned.is_some())
    else {
        return Ok(None);
    };
    let end = AuditPosition {
        seq: last.seq,
        head: last.hash,
    };
    session.save_checkpoint(end).await?;
    Ok(Some(end))
}

impl Account {
    /// Checks the events since the verified position (and, against them, every version
    /// the command was given), saves what this client now knows of the account, and logs
    /// out. A server caught going back, here or in the command, leaves the state as it was.
    async fn finish(self) -> Result<PathCheck, Failure> {
        let checked = self.session.check_recent_events().await;
        self.close(checked.is_ok()).await?;
        Ok(checked?)
    }

    /// Saves what this client now knows of the account if `keep` and the server was not
    /// caught going back, and logs out.
    async fn close(self, keep: bool) -> Result<(), Failure> {
        let saved = match &self.states {
            Some(states) if keep && !self.session.caught_rollback() => states
                .save(
                    &self.session.server_id(),
                    self.session.user(),
                    &self.session.state(),
                )
                .map(|_| ()),
            _ => Ok(()),
        };
        self.logout().await;
        Ok(saved?)
    }

    /// Logs out and closes the connection. A failed logout is said (the session stays open
    /// on the server until it expires), though the command's own work is done.
    async fn logout(self) {
        if let Err(e) = self.session.logout().await {
            eprintln!(
                "local-client: warning: logout failed ({e}); the session ends on its own when \
                 it expires"
            );
        }
        self.conn.shutdown().await;
    }
}

fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

/// Reads at most `max` bytes of `file` (`-`: stdin), zeroized when dropped; more is a
/// usage error naming `what`.
fn read_bounded(
    file: &std::path::Path,
    max: usize,
    what: &str,
) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let mut buf = Zeroizing::new(Vec::new());
    let limit = max as u64 + 1;
    let read = if file.as_os_str() == "-" {
        std::io::stdin().lock().take(limit).read_to_end(&mut buf)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(limit).read_to_end(&mut buf))
    };
    read.map_err(|e| usage(format!("cannot read {}: {e}", file.display())))?;
    if buf.len() > max {
        return Err(usage(format!("{what} is larger than {max} bytes")));
    }
    Ok(buf)
}

fn read_secret(file: &std::path::Path) -> Result<SecretBytes, Failure> {
    read_bounded(file, MAX_SECRET, "the secret").map(SecretBytes::from)
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let reads_stdin = match &cli.command {
        Cmd::Store { file, .. } => file.as_os_str() == "-",
        Cmd::Keys { command } => command.reads_stdin(),
        _ => false,
    };
    if reads_stdin && cli.password_stdin {
        return Err(usage(
            "--file - and --password-stdin both need stdin; use KEYSERVER_PASSWORD instead",
        ));
    }
    let mut out = std::io::stdout().lock();
    if let Cmd::Attestation { command } = &cli.command {
        // Offline: no server, no password.
        return attest::run(&cli, command, &mut out);
    }
    let pw = Passwords::new(cli.password_stdin)?;
    match &cli.command {
        Cmd::Register { user } => {
            let user = user_name(user)?;
            let password = pw.new_password(
                "KEYSERVER_PASSWORD",
                0,
                &format!("New password for {user}: "),
            )?;
            let conn = connect(&cli).await?;
            let r = conn.register(&user, &password).await;
            conn.shutdown().await;
            r?;
            eprintln!("registered {user}");
        }
        Cmd::Store {
            user,
            name,
            file,
            replace,
        } => {
            let (user, name) = (user_name(user)?, secret_name(name)?);
            let secret = read_secret(file)?;
            let account = login(&cli, &pw, &user).await?;
            let version = account.session.store(&name, &secret, *replace).await;
            let checked = account.finish().await;
            let version = version?;
            checked?;
            eprintln!("stored {name} (version {version})");
        }
        Cmd::Retrieve { user, name } => {
            let (user, name) = (user_name(user)?, secret_name(name)?);
            let account = login(&cli, &pw, &user).await?;
            let r = account.session.retrieve(&name).await;
            let checked = account.finish().await;
            // Nothing is written unless every check passed.
            let (secret, _) = r?;
            checked?;
            out.write_all(secret.expose_secret())
                .and_then(|()| out.flush())
                .context("cannot write to stdout")?;
        }
        Cmd::List { user, json } => {
            let user = user_name(user)?;
            let account = login(&cli, &pw, &user).await?;
            let r = account.session.list().await;
            let checked = account.finish().await;
            let entries = r?;
            checked?;
            if *json {
                let v: Vec<_> = entries
                    .iter()
                    .map(|e| serde_json::json!({"name": e.name.as_str(), "version": e.version, "size": e.size, "created": rfc3339(e.created)}))
                    .collect();
                writeln!(out, "{}", serde_json::Value::Array(v))
                    .context("cannot write to stdout")?;
            } else {
                for e in &entries {
                    writeln!(
                        out,
                        "{}\tversion {}\t{} bytes\t{}",
                        e.name,
                        e.version,
                        e.size,
                        rfc3339(e.created)
                    )
                    .context("cannot write to stdout")?;
                }
            }
        }
        Cmd::Delete { user, name } => {
            let (user, name) = (user_name(user)?, secret_name(name)?);
            let account = login(&cli, &pw, &user).await?;
            let r = account.session.delete(&name).await;
            let checked = account.finish().await;
            r?;
            checked?;
            eprintln!("deleted {name}");
        }
        Cmd::Audit { user, json } => {
            let user = user_name(user)?;
            let account = login(&cli, &pw, &user).await?;
            let session = &account.session;
            let r = async {
                let report = session.audit().await?;
                // The newest checkpoint a new device would start from, before this one.
                let before = session.newest_checkpoint().await?;
                let left = leave_checkpoint(session, &report).await?;
                Ok::<_, ClientError>((report, before, left))
            }
            .await;
            let from_checkpoint = account.session.started_from_checkpoint();
            // The audit read and checked the whole chain: nothing more to check.
            let closed = account.close(r.is_ok()).await;
            let (report, before, left) = r?;
            closed?;
            let verified = report.verification.is_ok();
            if *json {
                let events: Vec<_> = report
                    .events
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "seq": e.seq,
                            "time": rfc3339(e.time),
                            "kind": e.body.kind.as_str(),
                            "secret": e.body.secret.as_ref().map(|t| report.secret_name(t)),
                            "secret_tag": e.body.secret.as_ref().map(|t| hex(&t.0)),
                            "outcome": e.body.outcome.as_str(),
                            "version": e.body.version,
                            "key": e.body.key.as_ref().map(keyserver_protocol::KeyName::as_str),
                            "digest": e.body.digest.as_ref().map(|d| hex(d)),
                            "hash": hex(&e.hash),
                        })
                    })
                    .collect();
                let position =
                    |p: AuditPosition| serde_json::json!({"seq": p.seq, "head": hex(&p.head)});
                let doc = serde_json::json!({
                    "chain_verified": verified,
                    "pinned": report.pinned.map(position),
                    "pinned_from": match (report.pinned, from_checkpoint) {
                        (None, _) => serde_json::Value::Null,
                        (Some(_), Some(_)) => "checkpoint".into(),
                        (Some(_), None) => "state".into(),
                    },
                    "checkpoint": before.map(|c| serde_json::json!({
                        "seq": c.checkpoint.position.seq,
                        "head": hex(&c.checkpoint.position.head),
                        "time": rfc3339(c.time),
                    })),
                    "checkpoint_left": left.map(position),
                    "events": events,
                });
                writeln!(out, "{doc}").context("cannot write to stdout")?;
            } else {
                for e in &report.events {
                    let secret = e
                        .body
                        .secret
                        .as_ref()
                        .map(|t| format!(" {}", report.secret_name(t)))
                        .or_else(|| e.body.key.as_ref().map(|k| format!(" key {k}")))
                        .unwrap_or_default();
                    // A signature's message, a new key's public key: by their SHA-256.
                    let digest = e
                        .body
                        .digest
                        .as_ref()
                        .map(|d| format!(" sha256:{}", hex(d)))
                        .unwrap_or_default();
                    writeln!(
                        out,
                        "{:>6} {} {}{} {}{}",
                        e.seq,
                        rfc3339(e.time),
                        e.body.kind.as_str(),
                        secret,
                        e.body.outcome.as_str(),
                        digest
                    )
                    .context("cannot write to stdout")?;
                }
                match &report.verification {
                    Ok(()) => writeln!(out, "chain verified: {} events", report.events.len()),
                    Err(e) => writeln!(out, "chain NOT verified: {e}"),
                }
                .context("cannot write to stdout")?;
                match (report.pinned, from_checkpoint) {
                    (Some(p), Some(c)) => writeln!(
                        out,
                        "it extends event {} ({}…), from the checkpoint another device of \
                         this account left at {}",
                        p.seq,
                        &hex(&p.head)[..16],
                        rfc3339(c.time)
                    ),
                    (Some(p), None) => writeln!(
                        out,
                        "it extends event {} ({}…), the newest this client had verified",
                        p.seq,
                        &hex(&p.head)[..16]
                    ),
                    (None, _) => writeln!(
                        out,
                        "this client had seen nothing of this account before and found no \
                         checkpoint: the history above is trusted as first seen and \
                         remembered from now on (no checkpoint is left from it: the next \
                         audit leaves one)"
                    ),
                }
                .context("cannot write to stdout")?;
                if let Some(p) = left {
                    writeln!(
                        out,
                        "checkpoint left at event {} for the account's other devices",
                        p.seq
                    )
                    .context("cannot write to stdout")?;
                }
            }
            if let Err(e) = report.verification {
                return Err(Failure {
                    code: 1,
                    message: format!("the audit log failed verification: {e}"),
                });
            }
        }
        Cmd::ChangePassword { user } => {
            let user = user_name(user)?;
            let account = login(&cli, &pw, &user).await?;
            let new = pw.new_password(
                "KEYSERVER_NEW_PASSWORD",
                1,
                &format!("New password for {user}: "),
            );
            let r = match new {
                Ok(new) => account
                    .session
                    .change_password(&account.password, &new)
                    .await
                    .map_err(Failure::from),
                Err(e) => Err(e),
            };
            let checked = account.finish().await;
            r?;
            checked?;
            eprintln!("password changed for {user}; every other session of {user} has ended");
        }
        Cmd::RotateKey { user } => {
            let user = user_name(user)?;
            let account = login(&cli, &pw, &user).await?;
            let session = &account.session;
            let r = async {
                let n = session.rotate_key(&account.password).await?;
                // Checkpoints made under the old key no longer verify: leave a new one.
                let report = session.audit().await?;
                leave_checkpoint(session, &report).await?;
                Ok::<_, ClientError>(n)
            }
            .await;
            let checked = account.finish().await;
            let n = r?;
            checked?;
            eprintln!(
                "storage key replaced for {user}: {n} secret(s) sealed again; every other \
                 session of {user} has ended"
            );
        }
        Cmd::Keys { command } => keys::run(&cli, &pw, command, &mut out).await?,
        Cmd::Attestation { .. } => {}
        // Printed in `main`, before anything connects.
        Cmd::Completions { .. } => {}
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
