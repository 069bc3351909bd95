//! `change-password`: after a [`super::reauth`] in the same session, an OPAQUE registration
//! of the new password; the new record and the same storage key, sealed under the new
//! master key for the next epoch, replace the old ones in one transaction, and every other
//! session of the account ends. No secret is re-encrypted.

use serde::{Deserialize, Serialize};

use crate::{codec::Bytes, envelope::OpaqueBytes, limits::MAX_SEALED_STORAGE_KEY};

/// Step 1: OPAQUE `RegistrationRequest` for the new password. Needs a fresh reauth.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangePasswordStart {
    /// OPAQUE `RegistrationRequest`.
    pub message: OpaqueBytes,
}

/// The answer to step 1: OPAQUE `RegistrationResponse` for the new password, evaluated
/// under the account's next credential identifier (a fresh OPRF key for the new password).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangePasswordStarted {
    /// OPAQUE `RegistrationResponse`.
    pub message: OpaqueBytes,
}

/// Step 2: the new record and the storage key re-sealed under the new master key for
/// `epoch`, which must be the account's current epoch plus one. Uses up the reauth.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangePasswordFinish {
    /// The epoch the storage key was sealed for.
    pub epoch: u64,
    /// OPAQUE `RegistrationUpload`.
    pub upload: OpaqueBytes,
    /// The same storage key, sealed under the new master key.
    pub sealed_storage_key: Bytes<MAX_SEALED_STORAGE_KEY>,
}

/// The account's credentials were replaced; `epoch` is its new epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rekeyed {
    /// The account's epoch now.
    pub epoch: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OpRequest, OpResponse};

    #[test]
    fn both_steps_and_their_answers_round_trip() {
        let r = OpRequest::ChangePasswordStart(ChangePasswordStart {
            message: Bytes::new(vec![2; 32]).unwrap(),
        });
        assert_eq!(OpRequest::decode(&r.encode()).unwrap(), r);
        let r = OpRequest::ChangePasswordFinish(ChangePasswordFinish {
            epoch: 2,
            upload: Bytes::new(vec![3; 192]).unwrap(),
            sealed_storage_key: Bytes::new(vec![4; 73]).unwrap(),
        });
        assert_eq!(OpRequest::decode(&r.encode()).unwrap(), r);
        let a = OpResponse::ChangePasswordStarted(ChangePasswordStarted {
            message: Bytes::new(vec![5; 64]).unwrap(),
        });
        assert_eq!(OpResponse::decode(&a.encode()).unwrap(), a);
        let a = OpResponse::PasswordChanged(Rekeyed { epoch: 2 });
        assert_eq!(OpResponse::decode(&a.encode()).unwrap(), a);
    }
}
