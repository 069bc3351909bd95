//! `store`: a new version of a secret, with its audit event and recorded answer, in one
//! transaction.

use keyserver_protocol::{
    OpResponse,
    audit_chain::{EventBody, EventKind, Outcome},
    ops::{Store, Stored},
};

use super::{Answer, Call, once};
use crate::{
    audit,
    service::ServerError,
    storage::{self, SecretRow},
};

/// What a store does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Store it; `new_name` when no live secret had the name (the account holds one more).
    Store {
        /// Whether the account gains a secret.
        new_name: bool,
    },
    /// The name holds a secret and the store did not ask to replace it.
    Exists,
    /// The version is not the next one.
    VersionMismatch {
        /// The version a store must carry.
        expected: u64,
    },
    /// The account is full.
    Quota,
}

/// Decides a store of `version` (with `replace`) over the name's row `current`, in an
/// account holding `live` secrets of at most `quota`.
///
/// Versions only grow, across deletes too: the next version is one more than the row's,
/// whether it is live or deleted, so no version is ever reused.
pub(crate) fn decide(
    current: Option<&SecretRow>,
    version: u64,
    replace: bool,
    live: u64,
    quota: u64,
) -> Decision {
    let is_live = current.is_some_and(|r| r.sealed.is_some());
    let expected = current.map_or(0, |r| r.version).saturating_add(1);
    if is_live && !replace {
        Decision::Exists
    } else if version != expected {
        Decision::VersionMismatch { expected }
    } else if !is_live && live >= quota {
        Decision::Quota
    } else {
        Decision::Store { new_name: !is_live }
    }
}

/// Handles `store`.
pub(super) async fn handle(call: &Call<'_>, op: Store) -> Result<Answer, ServerError> {
    let (core, session, _req, now) = (call.core, call.session, call.req, call.now);
    let (account, quota, secs) = (
        session.account,
        core.config.max_secrets_per_account,
        now.unix_secs(),
    );
    once(call, move |tx, _| {
        Box::pin(async move {
            let mut a = storage::account(tx, account).await?;
            let current = tx.secret(account, &op.tag).await?;
            let outcome = match decide(
                current.as_ref(),
                op.version,
                op.replace,
                a.live_secrets,
                quota,
            ) {
                // A version mismatch is the normal first step of a replace (the client
                // learns the version to seal for): not worth an event in the user's log.
                Decision::VersionMismatch { expected } => {
                    return Ok(OpResponse::Error(
                        ServerError::VersionMismatch { expected }.reply(),
                    ));
                }
                Decision::Exists => Err(ServerError::NameExists.reply()),
                Decision::Quota => Err(ServerError::Quota.reply()),
                Decision::Store { new_name } => {
                    let row = SecretRow {
                        sealed_name: op.sealed_name.into_vec(),
                        version: op.version,
                        sealed: Some(op.sealed.into_vec()),
                        created: secs,
                    };
                    tx.put_secret(account, &op.tag, &row).await?;
                    if new_name {
                        a.live_secrets = a.live_secrets.saturating_add(1);
                    }
                    Ok(Stored {
                        version: op.version,
                        created: secs,
                    })
                }
            };
            let event = match outcome {
                Ok(_) => {
                    EventBody::about(EventKind::Store, &op.tag, Outcome::Ok).at_version(op.version)
                }
                Err(_) => EventBody::about(EventKind::Store, &op.tag, Outcome::Refused),
            };
            audit::append(tx, &mut a, event, secs).await?;
            tx.save_account(&a).await?;
            Ok(outcome.map_or_else(OpResponse::Error, OpResponse::Stored))
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(version: u64, live: bool) -> SecretRow {
        SecretRow {
            sealed_name: vec![2],
            version,
            sealed: live.then(|| vec![1]),
            created: 0,
        }
    }

    #[test]
    fn a_new_name_starts_at_version_one() {
        assert_eq!(
            decide(None, 1, false, 0, 10),
            Decision::Store { new_name: true }
        );
        assert_eq!(
            decide(None, 2, false, 0, 10),
            Decision::VersionMismatch { expected: 1 }
        );
    }

    #[test]
    fn an_existing_name_needs_replace_and_the_next_version() {
        let r = row(3, true);
        assert_eq!(decide(Some(&r), 4, false, 1, 10), Decision::Exists);
        assert_eq!(
            decide(Some(&r), 3, true, 1, 10),
            Decision::VersionMismatch { expected: 4 }
        );
        assert_eq!(
            decide(Some(&r), 4, true, 1, 10),
            Decision::Store { new_name: false }
        );
    }

    #[test]
    fn a_deleted_name_goes_on_counting_and_counts_against_the_quota_again() {
        let r = row(3, false);
        assert_eq!(
            decide(Some(&r), 1, false, 0, 10),
            Decision::VersionMismatch { expected: 4 }
        );
        assert_eq!(
            decide(Some(&r), 4, false, 0, 10),
            Decision::Store { new_name: true }
        );
        assert_eq!(decide(Some(&r), 4, false, 10, 10), Decision::Quota);
    }

    #[test]
    fn a_full_account_may_still_replace() {
        assert_eq!(decide(None, 1, false, 10, 10), Decision::Quota);
        assert_eq!(
            decide(Some(&row(1, true)), 2, true, 10, 10),
            Decision::Store { new_name: false }
        );
    }
}
