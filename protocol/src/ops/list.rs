//! `list`: the account's secrets, a page at a time, in name order.

use serde::{Deserialize, Serialize};

use crate::names::SecretName;

/// One page of the account's secrets, in name order, starting after `after`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct List {
    /// Where the previous page ended (`None` for the first page).
    pub after: Option<SecretName>,
}

/// One entry of `list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretEntry {
    /// The secret's name.
    pub name: SecretName,
    /// Its current version.
    pub version: u64,
    /// Plaintext size in bytes.
    pub size: u64,
    /// When this version was stored (Unix seconds, server clock).
    pub created: i64,
}

/// A page of `list`: at most [`crate::limits::LIST_PAGE`] entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPage {
    /// The entries, in name order.
    pub entries: Vec<SecretEntry>,
    /// Whether more pages follow.
    pub more: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        OpRequest, OpResponse,
        limits::{LIST_PAGE, MAX_SEALED_BODY, MAX_SECRET_NAME},
    };

    #[test]
    fn a_list_and_its_answer_round_trip() {
        for after in [None, Some(SecretName::new("a").unwrap())] {
            let r = OpRequest::List(List { after });
            assert_eq!(OpRequest::decode(&r.encode()).unwrap(), r);
        }
    }

    #[test]
    fn a_full_page_of_the_largest_entries_fits_in_a_sealed_body() {
        let long = SecretName::new("n".repeat(MAX_SECRET_NAME)).unwrap();
        let page = OpResponse::List(ListPage {
            entries: vec![
                SecretEntry {
                    name: long,
                    version: u64::MAX,
                    size: u64::MAX,
                    created: i64::MIN
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
