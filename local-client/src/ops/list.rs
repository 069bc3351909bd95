//! `list`: every secret of the account, page by page.

use keyserver_protocol::{
    OpRequest, OpResponse,
    limits::LIST_PAGE,
    ops::{List, SecretEntry},
};

use crate::{ClientError, Session};

impl Session {
    /// Lists every secret (name, version, size, created), in name order.
    ///
    /// Errors: [`ClientError::SessionEnded`] (log in again); [`ClientError::Protocol`] for
    /// pages that do not follow each other; transport errors (retry).
    pub async fn list(&self) -> Result<Vec<SecretEntry>, ClientError> {
        let mut all: Vec<SecretEntry> = Vec::new();
        let mut after = None;
        // Every entry is checked against the versions known when the listing started.
        let known = self.state();
        loop {
            let op = OpRequest::List(List {
                after: after.clone(),
            });
            let OpResponse::List(page) = self.call(&op).await? else {
                return Err(ClientError::Protocol("unexpected reply to List"));
            };
            if page.entries.len() > LIST_PAGE || (page.more && page.entries.is_empty()) {
                return Err(ClientError::Protocol("bad list page"));
            }
            for e in &page.entries {
                self.saw_version(&e.name, known.newest_version(&e.name), e.version)?;
            }
            after = page.entries.last().map(|e| e.name.clone());
            all.extend(page.entries);
            if !page.more {
                return Ok(all);
            }
        }
    }
}
