//! `list`: a page of the account's live secrets. Reading the first page is an audit event
//! (a read of the account's list), committed with the page it answers.

use keyserver_protocol::{
    OpResponse,
    audit_chain::{EventBody, EventKind, Outcome},
    codec::Bytes,
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

fn entry(l: SecretListing) -> Result<SecretEntry, ServerError> {
    Ok(SecretEntry {
        tag: l.tag,
        sealed_name: Bytes::new(l.sealed_name)
            .ok_or(ServerError::Internal("stored sealed name is too large"))?,
        version: l.version,
        size: l.sealed_len.map_or(0, |n| {
            plaintext_len(usize::try_from(n).unwrap_or(usize::MAX)) as u64
        }),
        created: l.created,
        deleted: l.sealed_len.is_none(),
    })
}

/// Handles `list`.
pub(super) async fn handle(call: &Call<'_>, op: List) -> Result<Answer, ServerError> {
    let (_core, session, now) = (call.core, call.session, call.now);
    let (account, secs) = (session.account, now.unix_secs());
    // One more than a page tells whether more follow.
    let deleted = op.deleted;
    let mut rows = match op.after {
        Some(after) => {
            super::read(call, move |tx, _| {
                Box::pin(async move {
                    tx.secrets(account, Some(&after), LIST_PAGE + 1, deleted)
                        .await
                })
            })
            .await?
        }
        None => {
            super::write(call, Durability::Process, move |tx, _| {
                Box::pin(async move {
                    let rows = tx.secrets(account, None, LIST_PAGE + 1, deleted).await?;
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
        entries: rows.into_iter().map(entry).collect::<Result<_, _>>()?,
        more,
    })))
}
