//! `list`: the account's secrets, a page at a time, in tag order (the client sorts by name,
//! which only it can read).

use serde::{Deserialize, Serialize};

use crate::names::{NameTag, SealedName};

/// One page of the account's secrets, in tag order, starting after `after`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct List {
    /// Where the previous page ended (`None` for the first page).
    pub after: Option<NameTag>,
    /// Whether deleted secrets are listed too (their sealed names and last versions: a key
    /// rotation seals those names again as well).
    pub deleted: bool,
}

/// One entry of `list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretEntry {
    /// The secret's name tag.
    pub tag: NameTag,
    /// Its name, sealed by the client.
    pub sealed_name: SealedName,
    /// Its current version (its last, if deleted).
    pub version: u64,
    /// Plaintext size in bytes (0 if deleted).
    pub size: u64,
    /// When this version was stored (Unix seconds, server clock).
    pub created: i64,
    /// Whether it was deleted.
    pub deleted: bool,
}

/// A page of `list`: at most [`crate::limits::LIST_PAGE`] entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPage {
    /// The entries, in tag order.
    pub entries: Vec<SecretEntry>,
    /// Whether more pages follow.
    pub more: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        OpRequest, OpResponse,
        codec::Bytes,
        limits::{LIST_PAGE, MAX_SEALED_BODY, MAX_SEALED_NAME},
    };

    #[test]
    fn a_list_and_its_answer_round_trip() {
        for after in [None, Some(NameTag([1; 32]))] {
            for deleted in [false, true] {
                let r = OpRequest::List(List { after, deleted });
                assert_eq!(OpRequest::decode(&r.encode()).unwrap(), r);
            }
        }
    }

    #[test]
    fn a_full_page_of_the_largest_entries_fits_in_a_sealed_body() {
        let page = OpResponse::List(ListPage {
            entries: vec![
                SecretEntry {
                    tag: NameTag([0xff; 32]),
                    sealed_name: Bytes::new(vec![0xff; MAX_SEALED_NAME]).unwrap(),
                    version: u64::MAX,
                    size: u64::MAX,
                    created: i64::MIN,
                    deleted: true,
                };
                LIST_PAGE
            ],
            more: true,
        });
        let page = crate::ops::OpAnswer {
            position: Some(crate::audit_chain::AuditPosition {
                seq: u64::MAX,
                head: [0xff; 32],
            }),
            response: page,
        };
        let sealed = page.encode().len() + crate::session::channel::RESPONSE_OVERHEAD;
        assert!(sealed <= MAX_SEALED_BODY);
        assert_eq!(crate::ops::OpAnswer::decode(&page.encode()).unwrap(), page);
    }
}
