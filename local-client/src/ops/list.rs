//! `list`: every secret of the account, page by page; the names are opened here (the server
//! has them only sealed, under tags it cannot read).

use keyserver_protocol::{
    NameTag, OpRequest, OpResponse, SecretName,
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

impl Session {
    /// Every entry of the account's list (with the deleted secrets if `deleted`), each
    /// with its name opened and checked against its tag.
    pub(crate) async fn list_entries(
        &self,
        deleted: bool,
    ) -> Result<Vec<(SecretName, SecretEntry)>, ClientError> {
        self.list_entries_opened(deleted, true)
            .await
            .map(|v| v.into_iter().filter_map(|(n, e)| Some((n?, e))).collect())
    }

    /// As [`Self::list_entries`]; unless `strict`, an entry whose name does not open is
    /// given without it rather than failing the whole list.
    pub(crate) async fn list_entries_opened(
        &self,
        deleted: bool,
        strict: bool,
    ) -> Result<Vec<(Option<SecretName>, SecretEntry)>, ClientError> {
        let mut all = Vec::new();
        let mut after: Option<NameTag> = None;
        let key = self.keys().storage_key;
        loop {
            let op = OpRequest::List(List { after, deleted });
            let OpResponse::List(page) = self.call(&op).await? else {
                return Err(ClientError::Protocol("unexpected reply to List"));
            };
            if page.entries.len() > LIST_PAGE
                || (page.more && page.entries.is_empty())
                || page.entries.windows(2).any(|w| w[0].tag >= w[1].tag)
                || after.is_some_and(|a| page.entries.first().is_some_and(|e| e.tag <= a))
            {
                return Err(ClientError::Protocol("bad list page"));
            }
            for e in page.entries {
                let name = key.open_name(&self.user, &e.tag, e.sealed_name.as_slice());
                if strict && name.is_err() {
                    return Err(ClientError::Integrity(
                        "a secret's sealed name was altered or is another secret's",
                    ));
                }
                after = Some(e.tag);
                all.push((name.ok(), e));
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
        for (name, e) in self.list_entries(false).await? {
            self.saw_version(&name, &e.tag, known.newest_version(&e.tag), e.version)?;
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
