//! `key-list`: every key the server holds for the account, in name order.

use keyserver_protocol::{
    OpRequest, OpResponse,
    limits::LIST_PAGE,
    ops::{KeyInfo, KeyList},
};

use super::key_generate::check_info;
use crate::{ClientError, Session};

/// Most keys read in one listing (the server's quota is far below).
const MAX_KEYS: usize = 1_000_000;

impl Session {
    /// Every key the server holds for the account, in name order (bytewise), with its
    /// signature count.
    ///
    /// Errors: [`ClientError::SessionEnded`]; transport errors (retry).
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>, ClientError> {
        let mut keys: Vec<KeyInfo> = Vec::new();
        loop {
            let after = keys.last().map(|k| k.name.clone());
            let op = OpRequest::KeyList(KeyList {
                after: after.clone(),
            });
            let (OpResponse::Keys(page), at) = self.call_at(&op).await? else {
                return Err(ClientError::Protocol("unexpected reply to KeyList"));
            };
            // In order, after where the last page ended, no more than a page.
            let ordered = page
                .keys
                .windows(2)
                .all(|w| w[0].name.as_str().as_bytes() < w[1].name.as_str().as_bytes())
                && page.keys.first().is_none_or(|k| {
                    after
                        .as_ref()
                        .is_none_or(|a| a.as_str().as_bytes() < k.name.as_str().as_bytes())
                });
            if !ordered
                || page.keys.len() > LIST_PAGE
                || (page.more && page.keys.len() != LIST_PAGE)
                || keys.len() + page.keys.len() > MAX_KEYS
            {
                return Err(ClientError::Protocol("bad key list page"));
            }
            for k in &page.keys {
                check_info(k, &k.name, None)?;
                self.saw_key(&k.name, k.public_key.as_slice(), at)?;
            }
            keys.extend(page.keys);
            if !page.more {
                return Ok(keys);
            }
        }
    }
}
