//! Upkeep: what the server does on a timer rather than per request. Memory is swept every
//! few seconds; storage, shared by a fleet, is purged far less often (those are writes).

use tracing::{debug, warn};

use super::{Core, login};
use crate::{clock::Now, storage::Durability};

/// Drops expired handshakes (recording abandoned logins) and expired sessions.
pub(super) async fn sweep(core: &Core, now: Now) {
    for p in core.handshakes.sweep(now) {
        login::abandon(core, p, now).await;
    }
    let n = core.sessions.sweep(now);
    if n > 0 {
        debug!(expired = n, "sessions expired");
    }
}

/// Deletes from storage what can no longer be used: recorded responses and sessions past
/// their lifetime or idle timeout, stale unknown-name guess counters, and secrets staged by
/// key rotations whose session is gone.
pub(super) async fn purge(core: &Core, now: Now) {
    let secs = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let unix = now.unix_secs();
    // A recorded response is useful while its session may still retry; no session
    // outlives its lifetime.
    let lifetime = secs(core.config.session_lifetime_secs);
    let idle = secs(core.config.session_idle_timeout_secs);
    // An unknown name's counter matters while a lockout could still be running.
    let lockout = secs(core.config.lockout_max_secs).saturating_mul(2);
    let purged = core
        .storage
        .write(Durability::Process, move |tx| {
            Box::pin(async move {
                let responses = tx.purge_responses(unix.saturating_sub(lifetime)).await?;
                let unknown = tx.purge_unknown_names(unix.saturating_sub(lockout)).await?;
                let sessions = tx
                    .purge_sessions(unix.saturating_sub(lifetime), unix.saturating_sub(idle))
                    .await?;
                // A key rotation that never finished: its session is gone.
                let staged = tx.purge_staged().await?;
                Ok((responses, unknown, sessions, staged))
            })
        })
        .await;
    match purged {
        Ok((responses, unknown, sessions, staged)) => {
            debug!(responses, unknown, sessions, staged, "storage purged");
        }
        Err(e) => warn!(error = %e, "could not purge storage"),
    }
}
