//! What the service holds: configuration, storage, the server's keys, the clock, and the
//! in-memory tables of handshakes and sessions.

use std::sync::Arc;

use keyserver_protocol::{ServerSetup, server_keys::ServerKeys, session::SessionVault};

use super::{
    admission::{RateLimiter, Rates},
    gates::AccountGates,
    pending::HandshakeTable,
    sessions::{Misses, SessionTable},
};
use crate::{clock::Clock, config::Config, guess_limit::LockoutPolicy, storage::Storage};

/// Session ids remembered as missing, at most.
const MISSES: usize = 10_000;
/// How long an id found missing is not looked up again.
const MISS_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// The protocol service of one server instance.
pub struct Core {
    pub(crate) config: Config,
    pub(crate) storage: Storage,
    pub(crate) setup: ServerSetup,
    pub(crate) keys: ServerKeys,
    pub(crate) vault: SessionVault,
    pub(crate) handshakes: HandshakeTable,
    pub(crate) sessions: SessionTable,
    pub(crate) limiter: RateLimiter,
    pub(crate) lookups: RateLimiter,
    pub(crate) misses: Misses,
    pub(crate) policy: LockoutPolicy,
    pub(crate) gates: Arc<AccountGates>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    pub(crate) attester: Option<Arc<crate::attestation::Attester>>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("config", &self.config)
            .field("storage", &self.storage.kind())
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl Core {
    /// A service over `storage` with the OPAQUE `setup` and the deployment's other `keys`,
    /// reading time from `clock`.
    pub fn new(
        config: Config,
        storage: Storage,
        setup: ServerSetup,
        keys: ServerKeys,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let handshakes = HandshakeTable::new(
            usize::try_from(config.max_pending_handshakes).unwrap_or(usize::MAX),
            config.handshake_timeout(),
        );
        let sessions = SessionTable::new(
            usize::try_from(config.max_sessions).unwrap_or(usize::MAX),
            config.session_idle_timeout(),
            config.session_lifetime(),
        );
        let limiter = RateLimiter::new(Rates {
            per_address: config.handshakes_per_second_per_address as f64,
            per_address_burst: config.handshake_burst_per_address as f64,
            overall: config.handshakes_per_second as f64,
            overall_burst: 2.0 * config.handshakes_per_second as f64,
        });
        let per_address = config.session_lookups_per_second_per_address as f64;
        let lookups = RateLimiter::new(Rates {
            per_address,
            per_address_burst: 2.0 * per_address,
            // What the database serves easily on one instance; a fleet has one each.
            overall: 20.0 * per_address,
            overall_burst: 40.0 * per_address,
        });
        let storage_jobs_per_account = storage.jobs_per_account();
        let metrics = Arc::new(crate::metrics::Metrics::new(storage.kind(), "unset"));
        Self {
            metrics,
            policy: LockoutPolicy::from_config(&config),
            vault: keys.vault(),
            keys,
            config,
            storage,
            setup,
            handshakes,
            sessions,
            limiter,
            lookups,
            misses: Misses::new(MISSES, MISS_TTL),
            gates: AccountGates::new(storage_jobs_per_account),
            clock,
            attester: None,
        }
    }

    /// The same core, counting into `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The same core, answering attestation requests with documents from `attester`.
    #[must_use]
    pub fn with_attester(mut self, attester: Arc<crate::attestation::Attester>) -> Self {
        self.attester = Some(attester);
        self
    }

    /// Its metrics.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// Sessions held by this instance.
    pub fn open_sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Handshakes pending on this instance.
    pub fn pending_handshakes(&self) -> usize {
        self.handshakes.len()
    }
}
