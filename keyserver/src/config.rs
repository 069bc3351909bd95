//! Server configuration: safe defaults, an optional TOML file in the data dir, command-line
//! overrides, and validation of every value before anything starts.

use std::{net::SocketAddr, path::Path, time::Duration};

use serde::Deserialize;

/// Largest configuration file we read: it is a few dozen lines.
pub const MAX_CONFIG_FILE: u64 = 64 * 1024;

/// A value that is out of bounds, or a file that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value is outside its allowed range.
    #[error("{name} must be between {min} and {max}, got {value}")]
    OutOfRange {
        /// The setting.
        name: &'static str,
        /// Its minimum.
        min: u64,
        /// Its maximum.
        max: u64,
        /// What was given.
        value: u64,
    },
    /// Two values contradict each other.
    #[error("{0}")]
    Inconsistent(&'static str),
    /// An entry of `web_origins` is not an origin as browsers send it.
    #[error(
        "web_origins: {0:?} is not an origin as browsers send it (scheme://host[:port], lower \
         case, no path, no trailing slash)"
    )]
    BadOrigin(String),
    /// The configuration file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration file is too large.
    #[error("{0} is larger than {MAX_CONFIG_FILE} bytes")]
    TooLarge(String),
    /// The configuration file is not valid TOML for this server.
    #[error("{path} is invalid: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What the parser said (it quotes positions, never values of secrets: the file
        /// holds none).
        message: String,
    },
}

/// A database URL. It may carry a password: `Debug` and [`DatabaseUrl::redacted`] print it
/// without one, and nothing else prints it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL, password included: only to connect with.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL without its user, its password or its query (which may carry a
    /// `password=` or the path of a key), for messages: `postgres://…@host:5432/db?…`.
    pub fn redacted(&self) -> String {
        let url = &self.0;
        let Some(scheme_end) = url.find("://") else {
            return "(a database URL that is not a URL)".into();
        };
        let (scheme, rest) = (&url[..scheme_end], &url[scheme_end + 3..]);
        let (rest, query) = match rest.split_once('?') {
            Some((r, _)) => (r, "?…"),
            None => (rest, ""),
        };
        let host = match rest.rfind('@') {
            Some(at) => format!("…@{}", &rest[at + 1..]),
            None => rest.to_string(),
        };
        format!("{scheme}://{host}{query}")
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

/// Everything the server can be told. Each field documents its default and why. `Debug`
/// prints the database URL without its password.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on (UDP for QUIC). Default `127.0.0.1:7443`; port 0 picks one.
    pub listen: SocketAddr,
    /// Postgres URL; when absent, the embedded SQLite database in the data dir is used.
    pub database_url: Option<DatabaseUrl>,
    /// The file holding the key that seals the server's OPAQUE setup. Default: next to the
    /// data dir (`<data dir>.setup.key`), never in it: with this key and a copy of the
    /// database, passwords can be guessed offline, so it must not travel with database
    /// backups. `KEYSERVER_SETUP_KEY` (the key itself, hex) overrides it.
    pub setup_key_file: Option<std::path::PathBuf>,
    /// Most sessions one account may hold at once (fleet-wide); more logins get
    /// `SLOW_DOWN`. Default 32.
    pub max_sessions_per_account: u64,
    /// Most secrets one account may hold; more stores of new names get `QUOTA`.
    /// Default 10,000.
    pub max_secrets_per_account: u64,
    /// Most keys the server holds for one account; more generates and imports get
    /// `QUOTA`. Default 100.
    pub max_keys_per_account: u64,
    /// Signatures one server-held key may make per minute; more get `SLOW_DOWN`. Signing
    /// is what a stolen session would abuse: the limit bounds the damage until the user
    /// notices (every signature is in the audit log). Default 120.
    pub signatures_per_minute_per_key: u64,
    /// Signatures all the keys of one account may make per minute. Default 600.
    pub signatures_per_minute_per_account: u64,
    /// A session ends after this long without a request. Default 15 minutes.
    pub session_idle_timeout_secs: u64,
    /// A session ends this long after login whatever happens. Default 12 hours.
    pub session_lifetime_secs: u64,
    /// Most sessions held at once; more logins get `SLOW_DOWN`. Each costs about 1 KiB.
    /// Default 100,000.
    pub max_sessions: u64,
    /// A handshake must finish within this time. Default 30 s: enough for the client's
    /// argon2 on a slow machine, short enough that abandoned logins are counted soon.
    pub handshake_timeout_secs: u64,
    /// Most handshakes pending at once; more get `SLOW_DOWN`. Default 10,000.
    pub max_pending_handshakes: u64,
    /// Most connections at once; more are refused. Default 10,000.
    pub max_connections: u64,
    /// Most connections at once from one source address (an IPv6 address counts by its
    /// /64, which one host typically holds whole); more are refused. Default 256: many
    /// clients behind one NAT, few enough that one address cannot take every slot.
    pub max_connections_per_address: u64,
    /// Concurrent requests (QUIC streams) per connection. Default 256.
    pub max_streams_per_connection: u64,
    /// Bytes of requests one connection may hold in the server's memory at once (requests
    /// being read or waiting for their answer); reading stops at the limit (back pressure).
    /// Default 8 MiB, at least one largest request. With QUIC's receive window (2 MiB per
    /// connection) this bounds a connection's buffers at about 10 MiB.
    pub max_buffered_bytes_per_connection: u64,
    /// Bytes of requests all the connections of one source address may hold in memory at
    /// once. Default 64 MiB.
    pub max_buffered_bytes_per_address: u64,
    /// Bytes of requests the whole server may hold in memory at once. Default 1 GiB.
    /// QUIC's receive windows come on top: at most 2 MiB per connection, so size
    /// `max_connections` to the machine too (the default 10,000 allows 20 GiB of them in
    /// the worst case).
    pub max_buffered_bytes: u64,
    /// A connection with no traffic is closed after this long. Default 60 s. Sessions
    /// outlive connections, so this only frees resources.
    pub connection_idle_timeout_secs: u64,
    /// Login and registration starts per second from one source address (sustained).
    /// Default 50, with bursts of 200: enough for 50 clients behind one address at once.
    pub handshakes_per_second_per_address: u64,
    /// Burst of handshake starts from one address. Default 200.
    pub handshake_burst_per_address: u64,
    /// Login and registration starts per second overall. Default 2,000 (about what two
    /// cores sustain); bursts of twice that.
    pub handshakes_per_second: u64,
    /// Lookups in the database of sessions this instance does not hold, per second from
    /// one source address (each request under an unknown session id costs one): default
    /// 100, bursts of 200. Ids found missing are also remembered for a few seconds.
    pub session_lookups_per_second_per_address: u64,
    /// A password change or key rotation must follow the session's reauth (a fresh proof
    /// of the password) within this time. Default 300 s.
    pub reauth_window_secs: u64,
    /// Consecutive failed logins before the account is locked. Default 10.
    pub max_failed_logins: u64,
    /// The first lockout lasts this long; each further failure doubles it. Default 60 s.
    pub lockout_base_secs: u64,
    /// Lockouts never last longer than this. Default 1 day.
    pub lockout_max_secs: u64,
    /// Where to serve `/metrics` (Prometheus), `/healthz` and `/readyz` over plain HTTP;
    /// off by default. Bind it to an address only the monitoring network reaches.
    pub metrics_listen: Option<SocketAddr>,
    /// Where to serve WebSocket over TLS (`wss://HOST:PORT/v1`) for browsers; off by
    /// default. Needs `web_origins`.
    pub web_listen: Option<SocketAddr>,
    /// The web listener's certificate chain (PEM): one browsers trust, for the name they
    /// use. Default: the server's own certificate (signed by the development CA, which
    /// browsers do not trust unless told to).
    pub web_cert_file: Option<std::path::PathBuf>,
    /// The private key (PEM) of `web_cert_file`.
    pub web_key_file: Option<std::path::PathBuf>,
    /// The pages allowed to use the web listener, as browsers send their `Origin`:
    /// `https://app.example` or `https://app.example:8443`, exactly.
    pub web_origins: Vec<String>,
    /// Which security module vouches for the server (`off`, `nsm` or `simulated`). With
    /// one, the server makes its TLS key in memory at start, serves a certificate for it
    /// instead of the data dir's, and answers attestation requests with documents bound to
    /// it. Default `off`.
    pub attestation: crate::attestation::Mode,
    /// Inside an enclave: listen for the host's relay here (a vsock port, or `unix:PATH`)
    /// instead of on UDP and TCP. Set by `--vsock` only.
    #[serde(skip)]
    pub vsock: Option<crate::relay::Endpoint>,
    /// Inside an enclave: where the host takes this server's calls to KMS and lends it AWS
    /// credentials. Set by `--host-calls` (default with a vsock port: `3:8000`).
    #[serde(skip)]
    pub host_calls: Option<crate::relay::Endpoint>,
    /// Where the deployment's keys are wrapped (`[keys]`).
    pub keys: KeySettings,
}

/// Which key provider wraps the deployment's data keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
pub enum Provider {
    /// A key file (`setup_key_file`, or next to the data dir): the embedded default.
    #[default]
    #[serde(rename = "file")]
    File,
    /// An AWS KMS key, over HTTPS with SigV4.
    #[serde(rename = "aws-kms")]
    AwsKms,
    /// An AWS KMS key, from inside a Nitro enclave (answers only for the enclave).
    #[serde(rename = "nitro-kms")]
    #[value(name = "nitro-kms")]
    NitroKms,
}

impl Provider {
    /// Its name in `keyserver.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::AwsKms => "aws-kms",
            Self::NitroKms => "nitro-kms",
        }
    }
}

/// The `[keys]` section: the key provider and its KMS key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeySettings {
    /// `file` (default), `aws-kms` or `nitro-kms`.
    pub provider: Provider,
    /// The KMS key (ARN, key id or alias); required by the KMS providers.
    pub kms_key_id: Option<String>,
    /// The KMS key's region; default: its ARN's, else `AWS_REGION`.
    pub kms_region: Option<String>,
    /// The KMS endpoint (a VPC endpoint, an emulator); default: AWS's for the region.
    pub kms_endpoint: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7443)),
            database_url: None,
            setup_key_file: None,
            max_sessions_per_account: 32,
            max_secrets_per_account: 10_000,
            max_keys_per_account: 100,
            signatures_per_minute_per_key: 120,
            signatures_per_minute_per_account: 600,
            session_idle_timeout_secs: 15 * 60,
            session_lifetime_secs: 12 * 3600,
            max_sessions: 100_000,
            handshake_timeout_secs: 30,
            max_pending_handshakes: 10_000,
            max_connections: 10_000,
            max_connections_per_address: 256,
            max_streams_per_connection: 256,
            max_buffered_bytes_per_connection: 8 * 1024 * 1024,
            max_buffered_bytes_per_address: 64 * 1024 * 1024,
            max_buffered_bytes: 1024 * 1024 * 1024,
            connection_idle_timeout_secs: 60,
            handshakes_per_second_per_address: 50,
            handshake_burst_per_address: 200,
            handshakes_per_second: 2000,
            session_lookups_per_second_per_address: 100,
            reauth_window_secs: 300,
            max_failed_logins: 10,
            lockout_base_secs: 60,
            lockout_max_secs: 24 * 3600,
            metrics_listen: None,
            web_listen: None,
            web_cert_file: None,
            web_key_file: None,
            web_origins: Vec::new(),
            attestation: crate::attestation::Mode::Off,
            vsock: None,
            host_calls: None,
            keys: KeySettings::default(),
        }
    }
}

fn range(name: &'static str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::OutOfRange {
            name,
            min,
            max,
            value,
        });
    }
    Ok(())
}

/// Whether `origin` is what a browser sends as `Origin`: `http` or `https`, a host, maybe a
/// port, nothing else (no path, no trailing slash, no user, lower case).
fn is_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
    else {
        return false;
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p))
            if p.bytes().all(|c| c.is_ascii_digit())
                && (!h.starts_with('[') || h.ends_with(']')) =>
        {
            (h, Some(p))
        }
        _ => (rest, None),
    };
    let bracketed = host.starts_with('[') && host.ends_with(']');
    let host_ok = !host.is_empty()
        && host.chars().all(|c| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || matches!(c, '.' | '-')
                || (bracketed && matches!(c, '[' | ']' | ':'))
        });
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    host_ok && port_ok && origin.len() <= 253
}

impl Config {
    fn validate_web(&self) -> Result<(), ConfigError> {
        if self.web_listen.is_none() {
            return Ok(());
        }
        if self.vsock.is_some() {
            return Err(ConfigError::Inconsistent(
                "web_listen is not served through the host's relay (--vsock): serve browsers \
                 from a keyserver outside the enclave's relay, or not at all",
            ));
        }
        if self.web_origins.is_empty() {
            return Err(ConfigError::Inconsistent(
                "web_listen needs web_origins: the pages (https://host[:port]) allowed to use it",
            ));
        }
        if let Some(bad) = self.web_origins.iter().find(|o| !is_origin(o)) {
            return Err(ConfigError::BadOrigin(bad.clone()));
        }
        if self.web_cert_file.is_some() != self.web_key_file.is_some() {
            return Err(ConfigError::Inconsistent(
                "web_cert_file and web_key_file go together",
            ));
        }
        Ok(())
    }

    /// Reads `path` over the defaults. A missing file is not an error: it means defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let display = path.display().to_string();
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: display,
                    source,
                });
            }
        };
        if meta.len() > MAX_CONFIG_FILE {
            return Err(ConfigError::TooLarge(display));
        }
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: display.clone(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: display,
            message,
        })
    }

    /// Parses TOML text over the defaults.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.message().to_string())
    }

    /// Checks every value; the server refuses to start on the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match (self.keys.provider, &self.keys.kms_key_id) {
            (Provider::AwsKms | Provider::NitroKms, None) => {
                return Err(ConfigError::Inconsistent(
                    "the aws-kms and nitro-kms key providers need kms_key_id ([keys] in \
                     keyserver.toml, --kms-key-id or KEYSERVER_KMS_KEY_ID)",
                ));
            }
            (Provider::File, Some(_)) => {
                return Err(ConfigError::Inconsistent(
                    "kms_key_id is set but the key provider is file: set provider = \"aws-kms\" \
                     in [keys]",
                ));
            }
            _ => {}
        }
        if self.attestation == crate::attestation::Mode::Nsm
            && self.keys.provider != Provider::NitroKms
        {
            return Err(ConfigError::Inconsistent(
                "attested by the Nitro Security Module, the server's keys must come from the                  nitro-kms provider: under file or aws-kms its host could unwrap them, and the                  attestation would vouch for nothing (--key-provider nitro-kms)",
            ));
        }
        self.validate_web()?;
        range(
            "session_idle_timeout_secs",
            self.session_idle_timeout_secs,
            1,
            7 * 86400,
        )?;
        range(
            "session_lifetime_secs",
            self.session_lifetime_secs,
            1,
            30 * 86400,
        )?;
        range("max_sessions", self.max_sessions, 1, 10_000_000)?;
        range(
            "max_sessions_per_account",
            self.max_sessions_per_account,
            1,
            100_000,
        )?;
        range(
            "max_secrets_per_account",
            self.max_secrets_per_account,
            1,
            10_000_000,
        )?;
        range(
            "max_keys_per_account",
            self.max_keys_per_account,
            1,
            100_000,
        )?;
        range(
            "signatures_per_minute_per_key",
            self.signatures_per_minute_per_key,
            1,
            10_000_000,
        )?;
        range(
            "signatures_per_minute_per_account",
            self.signatures_per_minute_per_account,
            1,
            10_000_000,
        )?;
        range(
            "handshake_timeout_secs",
            self.handshake_timeout_secs,
            1,
            600,
        )?;
        range(
            "max_pending_handshakes",
            self.max_pending_handshakes,
            1,
            1_000_000,
        )?;
        range("max_connections", self.max_connections, 1, 1_000_000)?;
        range(
            "max_connections_per_address",
            self.max_connections_per_address,
            1,
            1_000_000,
        )?;
        for (name, value) in [
            (
                "max_buffered_bytes_per_connection",
                self.max_buffered_bytes_per_connection,
            ),
            (
                "max_buffered_bytes_per_address",
                self.max_buffered_bytes_per_address,
            ),
            ("max_buffered_bytes", self.max_buffered_bytes),
        ] {
            // At least one largest request, whole.
            range(
                name,
                value,
                keyserver_protocol::limits::MAX_MESSAGE as u64 + 16,
                1 << 32,
            )?;
        }
        range(
            "session_lookups_per_second_per_address",
            self.session_lookups_per_second_per_address,
            1,
            1_000_000,
        )?;
        range("reauth_window_secs", self.reauth_window_secs, 10, 3600)?;
        range(
            "max_streams_per_connection",
            self.max_streams_per_connection,
            1,
            10_000,
        )?;
        range(
            "connection_idle_timeout_secs",
            self.connection_idle_timeout_secs,
            1,
            3600,
        )?;
        range(
            "handshakes_per_second_per_address",
            self.handshakes_per_second_per_address,
            1,
            1_000_000,
        )?;
        range(
            "handshake_burst_per_address",
            self.handshake_burst_per_address,
            1,
            1_000_000,
        )?;
        range(
            "handshakes_per_second",
            self.handshakes_per_second,
            1,
            10_000_000,
        )?;
        range("max_failed_logins", self.max_failed_logins, 1, 1000)?;
        range("lockout_base_secs", self.lockout_base_secs, 1, 86400)?;
        range("lockout_max_secs", self.lockout_max_secs, 1, 365 * 86400)?;
        if self.lockout_max_secs < self.lockout_base_secs {
            return Err(ConfigError::Inconsistent(
                "lockout_max_secs must not be less than lockout_base_secs",
            ));
        }
        if self.session_idle_timeout_secs > self.session_lifetime_secs {
            return Err(ConfigError::Inconsistent(
                "session_idle_timeout_secs must not exceed session_lifetime_secs",
            ));
        }
        Ok(())
    }

    /// `session_idle_timeout_secs` as a duration.
    pub fn session_idle_timeout(&self) -> Duration {
        Duration::from_secs(self.session_idle_timeout_secs)
    }

    /// `session_lifetime_secs` as a duration.
    pub fn session_lifetime(&self) -> Duration {
        Duration::from_secs(self.session_lifetime_secs)
    }

    /// The limits on signatures by server-held keys.
    pub fn sign_limits(&self) -> crate::held_keys::SignLimits {
        crate::held_keys::SignLimits {
            per_key: self.signatures_per_minute_per_key,
            per_account: self.signatures_per_minute_per_account,
        }
    }

    /// `handshake_timeout_secs` as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs)
    }
}

/// The commented configuration file written into a new data dir.
pub const TEMPLATE: &str = r#"# keyserver configuration. Every setting is optional; the values shown are the defaults.
# Command-line flags override this file.

# Address for QUIC (UDP). Port 0 picks a free port.
# listen = "127.0.0.1:7443"

# Postgres URL for production and for several instances sharing one database.
# Without it, the embedded SQLite database in this directory is used.
# database_url = "postgres://keyserver@db.internal/keyserver"

# The key that seals the server's OPAQUE setup. With it and a copy of the database,
# passwords can be guessed offline: keep it away from database backups, ideally on another
# volume. Default: next to this directory (<data dir>.setup.key), not in it. The
# KEYSERVER_SETUP_KEY environment variable (the key itself, 64 hex digits) overrides it.
# setup_key_file = "/etc/keyserver/setup.key"

# Sessions end after this many seconds without a request, and this long after login.
# session_idle_timeout_secs = 900
# session_lifetime_secs = 43200
# max_sessions = 100000
# max_sessions_per_account = 32

# Most secrets one account may hold.
# max_secrets_per_account = 10000

# Keys the server holds for users and signs with: at most this many per account, and at
# most this many signatures per minute per key and per account (fleet-wide).
# max_keys_per_account = 100
# signatures_per_minute_per_key = 120
# signatures_per_minute_per_account = 600

# A login or registration must finish within this time; unfinished logins count as failed.
# handshake_timeout_secs = 30
# max_pending_handshakes = 10000

# Transport limits. Requests held in memory: at most max_buffered_bytes_per_connection per
# connection, max_buffered_bytes_per_address for all the connections of one address (an
# IPv6 address counts by its /64), max_buffered_bytes overall; reading stops at a limit.
# QUIC's receive window adds at most 2 MiB per connection. Once half the connections (of
# the server or of one address) are taken, new QUIC connections must prove their address.
# max_connections = 10000
# max_connections_per_address = 256
# max_streams_per_connection = 256
# max_buffered_bytes_per_connection = 8388608
# max_buffered_bytes_per_address = 67108864
# max_buffered_bytes = 1073741824
# connection_idle_timeout_secs = 60

# Rate limits on login and registration starts, per source address and overall; the
# excess is answered with "slow down".
# handshakes_per_second_per_address = 50
# handshake_burst_per_address = 200
# handshakes_per_second = 2000

# Requests naming a session this instance does not hold cost a database lookup: at most
# this many per second from one address (bursts of twice that).
# session_lookups_per_second_per_address = 100

# A password change or key rotation needs the password proven again in the session
# (reauth) within this time.
# reauth_window_secs = 300

# Guess limiting: after this many consecutive failed logins the account is locked for
# lockout_base_secs, doubling with each further failure, at most lockout_max_secs.
# max_failed_logins = 10
# lockout_base_secs = 60
# lockout_max_secs = 86400

# Prometheus metrics (/metrics) and health checks (/healthz, /readyz) over plain HTTP on
# their own address; off unless set. No metric carries a user name, a secret name or an
# address.
# metrics_listen = "127.0.0.1:9443"

# WebSocket over TLS for browsers (wss://HOST:PORT/v1), off unless set: the pages allowed
# to use it (their exact origins) and a certificate browsers trust for the name they use
# (default: the server's own, which browsers do not trust).
# web_listen = "0.0.0.0:8443"
# web_origins = ["https://app.example"]
# web_cert_file = "/etc/keyserver/web.crt"
# web_key_file = "/etc/keyserver/web.key"

# Attestation: "nsm" inside an AWS Nitro enclave (documents from /dev/nsm), "simulated" for
# development with the module `keyserver init --simulated-attestation` made, or "off". With
# a module, the TLS key is made in memory at each start and clients check the enclave's
# PCRs instead of a CA (local-client --expect-pcrs).
# attestation = "off"

# Where the server's own secrets (the OPAQUE setup, the session vault key, the keys of
# unknown names and of server-held keys) are wrapped. Each is a data key kept in the
# database only wrapped by a key-encryption key: a key file (provider = "file", the key in
# setup_key_file above), or an AWS KMS key that never leaves KMS (provider = "aws-kms",
# credentials from the standard AWS environment or ~/.aws/credentials). Move a deployment
# between them with `keyserver rotate-kek`.
[keys]
# provider = "file"
# kms_key_id = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
# kms_region = "eu-west-1"
# kms_endpoint = "https://vpce-0123-abcd.kms.eu-west-1.vpce.amazonaws.com"
"#;

/// A new data dir's configuration for `keys`: the template, with the settings given at
/// `keyserver init` filled in.
pub fn template_with(keys: &KeySettings) -> String {
    if keys == &KeySettings::default() {
        return TEMPLATE.to_string();
    }
    with_keys(TEMPLATE, keys, None).unwrap_or_else(|_| unreachable!("the template parses"))
}

/// Configuration `text` with its `[keys]` table replaced by `keys` (and `setup_key_file`
/// set, if given); every other setting and comment is kept. The result is parsed again and
/// must say exactly that, or nothing is returned.
pub fn with_keys(
    text: &str,
    keys: &KeySettings,
    setup_key_file: Option<&Path>,
) -> Result<String, String> {
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| format!("cannot edit it: {}", e.message()))?;
    let mut table = toml_edit::Table::new();
    // The comments above the old table's header belong to it: keep them.
    if let Some(old) = doc.get("keys").and_then(toml_edit::Item::as_table) {
        *table.decor_mut() = old.decor().clone();
    }
    table.insert("provider", toml_edit::value(keys.provider.as_str()));
    for (k, v) in [
        ("kms_key_id", &keys.kms_key_id),
        ("kms_region", &keys.kms_region),
        ("kms_endpoint", &keys.kms_endpoint),
    ] {
        if let Some(v) = v {
            table.insert(k, toml_edit::value(v.as_str()));
        }
    }
    doc.insert("keys", toml_edit::Item::Table(table));
    if let Some(p) = setup_key_file {
        let p = p
            .to_str()
            .ok_or_else(|| format!("{}: not UTF-8", p.display()))?;
        doc.insert("setup_key_file", toml_edit::value(p));
    }
    let out = doc.to_string();
    let back =
        Config::from_toml(&out).map_err(|e| format!("the edited file would not parse: {e}"))?;
    let key_file_kept = setup_key_file.is_none_or(|p| back.setup_key_file.as_deref() == Some(p));
    if back.keys != *keys || !key_file_kept {
        return Err("the edited file would not say what it should".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_the_template_parses_to_them() {
        Config::default().validate().unwrap();
        assert_eq!(Config::from_toml(TEMPLATE).unwrap(), Config::default());
        let uncommented: String = TEMPLATE
            .lines()
            .filter(|l| {
                l.starts_with("# ")
                    && l.contains(" = ")
                    && !l.contains("database_url")
                    && !l.contains("setup_key_file")
                    && !l.contains("kms_")
                    && !l.contains("metrics_listen")
                    && !l.contains("web_")
                    && !l.contains("provider")
            })
            .map(|l| format!("{}\n", &l[2..]))
            .collect();
        assert_eq!(Config::from_toml(&uncommented).unwrap(), Config::default());
    }

    #[test]
    fn the_web_listener_needs_origins_as_browsers_send_them() {
        let web = |origins: &[&str]| Config {
            web_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            web_origins: origins.iter().map(|o| (*o).to_string()).collect(),
            ..Config::default()
        };
        for good in [
            "https://app.example",
            "https://app.example:8443",
            "http://127.0.0.1:8080",
            "http://[::1]:8080",
            "https://[::1]",
        ] {
            web(&[good])
                .validate()
                .unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        assert!(matches!(
            web(&[]).validate(),
            Err(ConfigError::Inconsistent(_))
        ));
        for bad in [
            "app.example",
            "https://app.example/",
            "https://app.example/v1",
            "https://App.example",
            "https://user@app.example",
            "https://app.example:0",
            "https://app.example:99999",
            "ftp://app.example",
            "null",
            "*",
            "https://",
        ] {
            assert!(
                matches!(web(&["https://ok.example", bad]).validate(), Err(ConfigError::BadOrigin(b)) if b == bad),
                "{bad}"
            );
        }
        let half = Config {
            web_cert_file: Some("web.crt".into()),
            ..web(&["https://app.example"])
        };
        assert!(matches!(half.validate(), Err(ConfigError::Inconsistent(_))));
        let toml = "web_listen = \"127.0.0.1:8443\"\nweb_origins = [\"https://app.example\"]\n";
        let c = Config::from_toml(toml).unwrap();
        c.validate().unwrap();
        assert_eq!(c.web_origins, ["https://app.example"]);
    }

    #[test]
    fn the_keys_section_chooses_the_provider_and_a_kms_key_needs_an_id() {
        let c =
            Config::from_toml("[keys]\nprovider = \"aws-kms\"\nkms_key_id = \"alias/keyserver\"\n")
                .unwrap();
        c.validate().unwrap();
        assert_eq!(c.keys.provider, Provider::AwsKms);
        let written = template_with(&c.keys);
        assert_eq!(Config::from_toml(&written).unwrap().keys, c.keys);
        // Moved back to a key file: the section is replaced, the rest kept.
        let back = with_keys(&written, &KeySettings::default(), None).unwrap();
        assert_eq!(Config::from_toml(&back).unwrap(), Config::default());
        assert!(back.contains("# max_failed_logins = 10"));
        // Line ends, a comment on the header, settings after it, a key file path.
        let crlf = "max_failed_logins = 5\r\n[keys] # prod\r\nprovider = \"aws-kms\"\r\nkms_key_id = \"k\"\r\n";
        let edited = with_keys(
            crlf,
            &KeySettings::default(),
            Some(Path::new("/etc/ks.key")),
        )
        .unwrap();
        let c = Config::from_toml(&edited).unwrap();
        assert_eq!(c.max_failed_logins, 5);
        assert_eq!(c.keys, KeySettings::default());
        assert_eq!(c.setup_key_file.as_deref(), Some(Path::new("/etc/ks.key")));
        assert!(with_keys("not [toml", &KeySettings::default(), None).is_err());
        let c = Config::from_toml("[keys]\nprovider = \"aws-kms\"\n").unwrap();
        assert!(matches!(c.validate(), Err(ConfigError::Inconsistent(_))));
        assert!(Config::from_toml("[keys]\nprovider = \"vault\"\n").is_err());
        assert!(Config::from_toml("[keys]\nkms_key = \"x\"\n").is_err());
    }

    #[test]
    fn debug_never_prints_the_database_password() {
        let c = Config::from_toml(
            "database_url = \"postgres://keyserver:hunter2@db.internal:5432/keyserver\"",
        )
        .unwrap();
        let d = format!("{c:?}");
        assert!(!d.contains("hunter2"), "{d}");
        assert!(d.contains("db.internal:5432/keyserver"), "{d}");
        assert_eq!(
            c.database_url.unwrap().expose(),
            "postgres://keyserver:hunter2@db.internal:5432/keyserver"
        );
        // A password in the query, or no URL at all, is not printed either.
        for url in [
            "postgres://db.internal/keyserver?user=k&password=hunter2",
            "postgres://k@db.internal/keyserver?sslmode=require&password=hunter2",
            "host=db.internal password=hunter2",
        ] {
            let r = DatabaseUrl::new(url).redacted();
            assert!(!r.contains("hunter2"), "{r}");
            assert!(!format!("{:?}", DatabaseUrl::new(url)).contains("hunter2"));
        }
        assert_eq!(
            DatabaseUrl::new("postgres://db.internal/keyserver?password=x").redacted(),
            "postgres://db.internal/keyserver?…"
        );
    }

    #[test]
    fn refuses_unknown_keys_and_out_of_range_values() {
        assert!(Config::from_toml("lisen = \"127.0.0.1:1\"").is_err());
        let c = Config::from_toml("max_failed_logins = 0").unwrap();
        assert!(matches!(
            c.validate(),
            Err(ConfigError::OutOfRange {
                name: "max_failed_logins",
                ..
            })
        ));
        let c = Config::from_toml("session_idle_timeout_secs = 100\nsession_lifetime_secs = 10")
            .unwrap();
        assert!(matches!(c.validate(), Err(ConfigError::Inconsistent(_))));
    }

    #[test]
    fn an_nsm_attested_server_takes_its_keys_only_from_nitro_kms() {
        let arn = "arn:aws:kms:eu-west-1:111122223333:key/k";
        for (provider, key, ok) in [
            ("file", None, false),
            ("aws-kms", Some(arn), false),
            ("nitro-kms", Some(arn), true),
        ] {
            let mut c = Config::from_toml(&format!("[keys]\nprovider = \"{provider}\"\n")).unwrap();
            c.keys.kms_key_id = key.map(str::to_string);
            c.attestation = crate::attestation::Mode::Nsm;
            assert_eq!(c.validate().is_ok(), ok, "{provider}");
            // Simulated attestation is for development: any provider.
            c.attestation = crate::attestation::Mode::Simulated;
            c.validate().unwrap();
        }
    }
}
