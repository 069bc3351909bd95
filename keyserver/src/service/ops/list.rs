//! `list`: a page of the account's live secrets. Reading the first page is an audit event
//! (a read of the account's list), committed with the page it answers.

use keyserver_protocol::{
    OpResponse,
    audit_chain::{EventBody, EventKind, Outcome},
    limits::LIST_PAGE,
    ops::{List, ListPage, SecretEntry},
    seal::plaintext_len,
};

use super::{Answer, Call};
use crate::{
    audit,
    service::ServerError,
    storage::{self, Durability, SecretListing},
};

fn entry(l: SecretListing) -> SecretEntry {
    SecretEntry {
        name: l.name,
        version: l.version,
        size: plaintext_len(usize::try_from(l.sealed_len).unwrap_or(usize::MAX)) as u64,
        created: l.created,
    }
}

/// Handles `list`.
pub(super) async fn handle(call: &Call<'_>, op: List) -> Result<Answer, ServerError> {
    let (_core, session, now) = (call.core, call.session, call.now);
    let (account, secs) = (session.account, now.unix_secs());
    // One more than a page tells whether more follow.
    let mut rows = match op.after {
        Some(after) => {
            super::read(call, move |tx, _| {
                Box::pin(async move { tx.secrets(account, Some(&after), LIST_PAGE + 1).await })
            })
            .await?
        }
        None => {
            super::write(call, Durability::Process, move |tx, _| {
                Box::pin(async move {
                    let rows = tx.secrets(account, None, LIST_PAGE + 1).await?;
                    let mut a = storage::account(tx, account).await?;
                    let event = EventBody::new(EventKind::List, Outcome::Ok);
                    audit::append(tx, &mut a, event, secs).await?;
                    tx.save_account(&a).await?;
                    Ok(rows)
                })
            })
            .await?
        }
    };
    let more = rows.len() > LIST_PAGE;
    rows.truncate(LIST_PAGE);
    Ok(Answer::Fresh(OpResponse::List(ListPage {
        entries: rows.into_iter().map(entry).collect(),
        more,
    })))
}
