//! `rotate-key`: a new storage key for the account, for a user who fears the old one was
//! seen. After a [`super::reauth`], the client stages every live secret sealed again under
//! the new key (same name and version), in as many requests as it takes; the finish swaps
//! them all in, with the new sealed storage key for the next epoch, in one transaction, and
//! ends every other session of the account. A rotation that dies half-way changes nothing:
//! what was staged is dropped with the session.

use serde::{Deserialize, Serialize};

use super::SealedSecret;
use crate::{
    codec::Bytes,
    limits::MAX_SEALED_STORAGE_KEY,
    names::{NameTag, SealedName},
};

/// One secret, live or deleted, under the new storage key: its new name tag and sealed
/// name, and (if live) the secret sealed again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedSecret {
    /// Its name tag now (under the current storage key).
    pub tag: NameTag,
    /// Its name tag under the new storage key.
    pub new_tag: NameTag,
    /// Its name sealed under the new storage key.
    pub sealed_name: SealedName,
    /// Its current version (sealed into the new ciphertext's associated data).
    pub version: u64,
    /// The secret sealed under the new storage key; `None` for a deleted secret.
    pub sealed: Option<SealedSecret>,
}

/// Stages secrets sealed under the new key (staging a name again replaces it). Needs a
/// fresh reauth.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateKeyStage {
    /// The secrets, as many as fit in one message.
    pub secrets: Vec<StagedSecret>,
}

/// What is staged in this session so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staged {
    /// Secrets staged.
    pub staged: u64,
}

/// Swaps every staged secret in, with the new storage key sealed for `epoch` (the current
/// epoch plus one). Refused unless exactly the account's secrets are staged (live and
/// deleted), each at its current version. Uses up the reauth. Answered with [`crate::OpResponse::KeyRotated`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateKeyFinish {
    /// The epoch the new storage key was sealed for.
    pub epoch: u64,
    /// The new storage key, sealed under the master key.
    pub sealed_storage_key: Bytes<MAX_SEALED_STORAGE_KEY>,
    /// How many secrets the client staged (a check: the server counts them too).
    pub secrets: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OpRequest, OpResponse, ops::Rekeyed};

    #[test]
    fn staging_and_finishing_round_trip() {
        let r = OpRequest::RotateKeyStage(RotateKeyStage {
            secrets: vec![
                StagedSecret {
                    tag: NameTag([1; 32]),
                    new_tag: NameTag([2; 32]),
                    sealed_name: Bytes::new(vec![3; 42]).unwrap(),
                    version: 3,
                    sealed: Some(Bytes::new(vec![1; 50]).unwrap()),
                },
                StagedSecret {
                    tag: NameTag([4; 32]),
                    new_tag: NameTag([5; 32]),
                    sealed_name: Bytes::new(vec![6; 42]).unwrap(),
                    version: 1,
                    sealed: None,
                },
            ],
        });
        assert_eq!(OpRequest::decode(&r.encode()).unwrap(), r);
        let r = OpRequest::RotateKeyFinish(RotateKeyFinish {
            epoch: 4,
            sealed_storage_key: Bytes::new(vec![2; 73]).unwrap(),
            secrets: 1,
        });
        assert_eq!(OpRequest::decode(&r.encode()).unwrap(), r);
        let a = OpResponse::Staged(Staged { staged: 1 });
        assert_eq!(OpResponse::decode(&a.encode()).unwrap(), a);
        let a = OpResponse::KeyRotated(Rekeyed { epoch: 4 });
        assert_eq!(OpResponse::decode(&a.encode()).unwrap(), a);
    }
}
