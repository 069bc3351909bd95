//! `retrieve`: the current version of a secret, still sealed; the client opens it.

use serde::{Deserialize, Serialize};

use super::SealedSecret;
use crate::names::NameTag;

/// Read the current version of the secret tagged `tag`. Refused with `NOT_FOUND` if there
/// is none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retrieve {
    /// The secret's name tag.
    pub tag: NameTag,
}

/// The current version of a secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    /// Its version (also in the ciphertext's associated data, so the server cannot pass
    /// another version off as this one).
    pub version: u64,
    /// When it was stored.
    pub created: i64,
    /// The sealed secret.
    pub sealed: SealedSecret,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OpRequest, OpResponse, codec::Bytes};

    #[test]
    fn a_retrieve_and_its_answer_round_trip() {
        let r = OpRequest::Retrieve(Retrieve {
            tag: NameTag([1; 32]),
        });
        assert_eq!(OpRequest::decode(&r.encode()).unwrap(), r);
        let a = OpResponse::Secret(Secret {
            version: 1,
            created: 5,
            sealed: Bytes::new(vec![2; 41]).unwrap(),
        });
        assert_eq!(OpResponse::decode(&a.encode()).unwrap(), a);
    }

    /// The largest secret, with its position, sealed for the client, fits in a sealed body.
    #[test]
    fn the_largest_secret_fits_in_a_sealed_answer() {
        let a = crate::ops::OpAnswer {
            position: Some(crate::audit_chain::AuditPosition {
                seq: u64::MAX,
                head: [0xff; 32],
            }),
            response: OpResponse::Secret(Secret {
                version: u64::MAX,
                created: i64::MIN,
                sealed: Bytes::new(vec![2; crate::limits::MAX_SEALED_SECRET]).unwrap(),
            }),
        };
        let sealed = a.encode().len() + crate::session::channel::RESPONSE_OVERHEAD;
        assert!(sealed <= crate::limits::MAX_SEALED_BODY);
    }
}
