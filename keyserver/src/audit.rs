//! The audit rule, written once for every backend: each event of an account is chained to
//! the one before it (`keyserver_protocol::audit_chain`), in the same transaction as what
//! it records. Unknown names keep a chain of the same shape that no one reads, so that a
//! login for one costs what a login for a real account does.

use keyserver_protocol::audit_chain::{self, AuditEvent, EventBody};

use crate::storage::{AccountRow, StorageError, Tx, UnknownRow};

/// The event that would follow `account`'s head: seq one more, hash linked to the head (or
/// to the user's genesis hash before the first event).
pub fn next(account: &AccountRow, body: EventBody, now: i64) -> AuditEvent {
    let prev = account
        .audit_head
        .unwrap_or_else(|| audit_chain::genesis(&account.user));
    after(&prev, account.audit_seq, body, now)
}

fn after(prev: &[u8; 32], seq: u64, body: EventBody, now: i64) -> AuditEvent {
    let seq = seq.saturating_add(1);
    let hash = audit_chain::link(prev, seq, now, &body);
    AuditEvent {
        seq,
        time: now,
        body,
        hash,
    }
}

/// Appends `body` to `account`'s chain: inserts the event and moves the head in `account`,
/// which the caller writes back with [`Tx::save_account`] before its job ends.
pub async fn append(
    tx: &mut dyn Tx,
    account: &mut AccountRow,
    body: EventBody,
    now: i64,
) -> Result<(), StorageError> {
    let event = next(account, body, now);
    tx.insert_event(account.id, &event).await?;
    account.audit_seq = event.seq;
    account.audit_head = Some(event.hash);
    Ok(())
}

/// Appends `body` to the stand-in chain of the unknown name `name_key`, exactly as
/// [`append`] does to an account's: the same hashing, the same rows written (the caller
/// saves `row`). The chain starts from the name's key, so it names no one.
pub async fn append_unknown(
    tx: &mut dyn Tx,
    name_key: &[u8; 32],
    row: &mut UnknownRow,
    body: EventBody,
    now: i64,
) -> Result<(), StorageError> {
    let event = after(row.head.as_ref().unwrap_or(name_key), row.seq, body, now);
    tx.insert_unknown_event(name_key, &event).await?;
    row.seq = event.seq;
    row.head = Some(event.hash);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyserver_protocol::{
        UserName,
        audit_chain::{ChainVerifier, EventKind, Outcome},
    };

    use crate::storage::Guesses;

    #[test]
    fn successive_events_form_a_chain_from_the_users_genesis() {
        let user = UserName::new("alice").unwrap();
        let mut a = AccountRow {
            id: 1,
            user: user.clone(),
            guesses: Guesses::default(),
            audit_seq: 0,
            audit_head: None,
            live_secrets: 0,
            epoch: 1,
        };
        let mut v = ChainVerifier::new(&user);
        for t in 0..5 {
            let e = next(&a, EventBody::new(EventKind::LoginStarted, Outcome::Ok), t);
            v.push(&e).unwrap();
            a.audit_seq = e.seq;
            a.audit_head = Some(e.hash);
        }
        assert_eq!(v.last_seq(), 5);
    }
}
