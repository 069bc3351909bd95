//! `key-list`: the keys the server holds for the account, a page at a time, in name order
//! (bytewise), each with its signature count.

use serde::{Deserialize, Serialize};

use super::key_public::KeyInfo;
use crate::names::KeyName;

/// One page of the account's keys, starting after `after`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyList {
    /// Where the previous page ended (`None` for the first page).
    pub after: Option<KeyName>,
}

/// A page of `key-list`: at most [`crate::limits::LIST_PAGE`] keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyListPage {
    /// The keys, in name order.
    pub keys: Vec<KeyInfo>,
    /// Whether more pages follow.
    pub more: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        OpRequest, OpResponse,
        codec::Bytes,
        limits::{LIST_PAGE, MAX_SEALED_BODY, MAX_SECRET_NAME},
        signing::{Algorithm, MAX_PUBLIC_KEY},
    };

    #[test]
    fn a_full_page_of_the_largest_keys_fits_in_a_sealed_body() {
        let r = OpRequest::KeyList(KeyList {
            after: Some(KeyName::new("k").unwrap()),
        });
        assert_eq!(OpRequest::decode(&r.encode()).unwrap(), r);
        let page = crate::ops::OpAnswer {
            position: Some(crate::audit_chain::AuditPosition {
                seq: u64::MAX,
                head: [0xff; 32],
            }),
            response: OpResponse::Keys(KeyListPage {
                keys: vec![
                    KeyInfo {
                        name: KeyName::new("\u{10ffff}".repeat(MAX_SECRET_NAME / 4)).unwrap(),
                        algorithm: Algorithm::Secp256k1,
                        public_key: Bytes::new(vec![0xff; MAX_PUBLIC_KEY]).unwrap(),
                        exportable: true,
                        created: i64::MIN,
                        signatures: u64::MAX,
                    };
                    LIST_PAGE
                ],
                more: true,
            }),
        };
        let sealed = page.encode().len() + crate::session::channel::RESPONSE_OVERHEAD;
        assert!(sealed <= MAX_SEALED_BODY);
        assert_eq!(crate::ops::OpAnswer::decode(&page.encode()).unwrap(), page);
    }
}
