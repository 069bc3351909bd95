//! `list`: every secret of the account, page by page; the names are opened here (the server
//! has them only sealed, under tags it cannot read).

use keyserver_protocol::{
    NameTag, OpRequest, OpResponse, SecretName,
    audit_chain::AuditPosition,
    limits::LIST_PAGE,
    ops::{List, SecretEntry},
};

use crate::{ClientError, Session};

/// One secret as `list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// Its name.
    pub name: SecretName,
    /// Its current version.
    pub version: u64,
    /// Its size in bytes.
    pub size: u64,
    /// When this version was stored (Unix seconds, server clock).
    pub created: i64,
}

/// One entry of the account's list, as read.
pub(crate) struct Entry {
    /// Its name, opened and checked against its tag (`None`: it did not open).
    pub(crate) name: Option<SecretName>,
    /// The entry.
    pub(crate) entry: SecretEntry,
    /// The position of the answer that gave it.
    pub(crate) at: AuditPosition,
}

impl Session {
    /// Every entry of the account's list (with the deleted secrets if `deleted`), each
    /// with its name opened and checked against its tag.
    pub(crate) async fn list_entries(
        &self,
        deleted: bool,
    ) -> Result<Vec<(SecretName, Entry)>, ClientError> {
        self.list_entries_opened(deleted, true).await.map(|v| {
            v.into_iter()
                .filter_map(|e| Some((e.name.clone()?, e)))
                .collect()
        })
    }

    /// As [`Self::list_entries`]; unless `strict`, an entry whose name does not open is
    /// given without it rather than failing the whole list.
    pub(crate) async fn list_entries_opened(
        &self,
        deleted: bool,
        strict: bool,
    ) -> Result<Vec<Entry>, ClientError> {
        let mut all = Vec::new();
        let mut after: Option<NameTag> = None;
        let key = self.keys().storage_key;
        loop {
            let op = OpRequest::List(List { after, deleted });
            // The first page records a `list` event; the others read.
            let (OpResponse::List(page), at) = (match after {
                None => self.call_recorded(&op, "list").await?,
                Some(_) => self.call_at(&op).await?,
            }) else {
                return Err(ClientError::Protocol("unexpected reply to List"));
            };
            if page.entries.len() > LIST_PAGE
                || (page.more && page.entries.is_empty())
                || page.entries.windows(2).any(|w| w[0].tag >= w[1].tag)
                || after.is_some_and(|a| page.entries.first().is_some_and(|e| e.tag <= a))
            {
                return Err(ClientError::Protocol("bad list page"));
            }
            if all.len() + page.entries.len() > crate::state::MAX_TRACKED {
                return Err(ClientError::Protocol(
                    "the account lists more secrets than this client reads",
                ));
            }
            for e in page.entries {
                let name = key.open_name(&self.user, &e.tag, e.sealed_name.as_slice());
                if strict && name.is_err() {
                    return Err(ClientError::Integrity(
                        "a secret's sealed name was altered or is another secret's",
                    ));
                }
                after = Some(e.tag);
                all.push(Entry {
                    name: name.ok(),
                    entry: e,
                    at,
                });
            }
            if !page.more {
                return Ok(all);
            }
        }
    }

    /// Lists every secret (name, version, size, created), in name order.
    ///
    /// Errors: [`ClientError::Rollback`] if a secret's version is older than one this
    /// client stored or saw; [`ClientError::Integrity`] if a sealed name does not open;
    /// [`ClientError::SessionEnded`] (log in again); [`ClientError::Protocol`] for pages
    /// that do not follow each other; transport errors (retry).
    pub async fn list(&self) -> Result<Vec<Listed>, ClientError> {
        // Every entry is checked against the versions known when the listing started.
        let known = self.state();
        let mut out = Vec::new();
        for (name, Entry { entry: e, at, .. }) in self.list_entries(false).await? {
            self.saw_version(
                &name,
                &e.tag,
                known.newest_known(&name, &e.tag),
                e.version,
                at,
            )?;
            out.push(Listed {
                name,
                version: e.version,
                size: e.size,
                created: e.created,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}
