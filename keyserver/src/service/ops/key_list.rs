//! `key-list`: a page of the account's keys, in name order, each authenticated as
//! `key-public` does.

use keyserver_protocol::{
    OpResponse,
    limits::LIST_PAGE,
    ops::{KeyList, KeyListPage},
};

use super::{Answer, Call, key_public::authenticated};
use crate::service::ServerError;

/// Handles `key-list`.
pub(super) async fn handle(call: &Call<'_>, op: KeyList) -> Result<Answer, ServerError> {
    let account = call.session.account;
    // One more than a page tells whether more follow.
    let mut rows = super::read(call, move |tx, _| {
        Box::pin(async move {
            tx.held_keys(account, op.after.as_ref(), LIST_PAGE + 1)
                .await
        })
    })
    .await?;
    let more = rows.len() > LIST_PAGE;
    rows.truncate(LIST_PAGE);
    let keys = rows
        .into_iter()
        .map(|row| authenticated(call, row))
        .collect::<Result<_, _>>()?;
    Ok(Answer::Fresh(OpResponse::Keys(KeyListPage { keys, more })))
}
