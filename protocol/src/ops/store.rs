//! `store`: a new version of a secret, sealed by the client.

use serde::{Deserialize, Serialize};

use super::SealedSecret;
use crate::names::{NameTag, SealedName};

/// Store `sealed` as version `version` of the secret tagged `tag`, with its sealed name.
///
/// Without `replace`, refused with `NAME_EXISTS` if the name holds a secret. Either way
/// `version` must be the next version of the name (1 for a name never used; after a delete,
/// versions go on counting), else `VERSION_MISMATCH` says which one is: the client then
/// seals again under that version. The client chooses the version because it is sealed into
/// the ciphertext's associated data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Store {
    /// The secret's name tag.
    pub tag: NameTag,
    /// Its name, sealed by the client (kept for `list`; replaced at every store).
    pub sealed_name: SealedName,
    /// The version the blob was sealed for.
    pub version: u64,
    /// Whether an existing secret may be replaced by this new version.
    pub replace: bool,
    /// The sealed secret.
    pub sealed: SealedSecret,
}

/// The store was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// The version now current.
    pub version: u64,
    /// When it was stored (Unix seconds, server clock).
    pub created: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OpRequest, OpResponse, codec::Bytes};

    #[test]
    fn a_store_and_its_answer_round_trip() {
        let r = OpRequest::Store(Store {
            tag: NameTag([1; 32]),
            sealed_name: Bytes::new(vec![2; 42]).unwrap(),
            version: 3,
            replace: true,
            sealed: Bytes::new(vec![1; 80]).unwrap(),
        });
        assert_eq!(OpRequest::decode(&r.encode()).unwrap(), r);
        let a = OpResponse::Stored(Stored {
            version: 3,
            created: -1,
        });
        assert_eq!(OpResponse::decode(&a.encode()).unwrap(), a);
    }
}
