//! `reauth`: an OPAQUE login inside a session, proving that whoever holds the session knows
//! the password now. Changing the password and rotating the storage key each need one, so a
//! session taken from its user (a phished token, a stolen laptop left logged in) cannot
//! replace the password or the key and lock the user out of every secret.
//!
//! A reauthentication counts as a password guess (like a login start) and, once finished,
//! is valid for one sensitive operation within a few minutes.

use serde::{Deserialize, Serialize};

use crate::envelope::{HandshakeId, OpaqueBytes};

/// Step 1: OPAQUE `CredentialRequest` (KE1) for the account's current password.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReauthStart {
    /// OPAQUE `CredentialRequest`.
    pub message: OpaqueBytes,
}

/// The answer to step 1 (KE2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReauthStarted {
    /// Names this reauthentication in step 2 (valid in this session only).
    pub handshake: HandshakeId,
    /// OPAQUE `CredentialResponse`.
    pub message: OpaqueBytes,
}

/// Step 2: OPAQUE `CredentialFinalization` (KE3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReauthFinish {
    /// From [`ReauthStarted`].
    pub handshake: HandshakeId,
    /// OPAQUE `CredentialFinalization`.
    pub message: OpaqueBytes,
}

/// Ends a reauthentication whose KE2 did not open (a wrong password), so that it is recorded
/// as failed now rather than when it expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReauthAbort {
    /// From [`ReauthStarted`].
    pub handshake: HandshakeId,
}

/// The answer to [`ReauthAbort`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReauthAborted {
    /// Wrong guesses left before the account locks, if the reauth was still pending.
    pub guesses_left: Option<u64>,
}

/// The password was proven: one sensitive operation may follow within `valid_secs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reauthenticated {
    /// Seconds the proof stays valid.
    pub valid_secs: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OpRequest, OpResponse, codec::Bytes};

    #[test]
    fn both_steps_and_their_answers_round_trip() {
        let r = OpRequest::ReauthStart(ReauthStart {
            message: Bytes::new(vec![1; 96]).unwrap(),
        });
        assert_eq!(OpRequest::decode(&r.encode()).unwrap(), r);
        let r = OpRequest::ReauthFinish(ReauthFinish {
            handshake: HandshakeId([2; 16]),
            message: Bytes::new(vec![3; 64]).unwrap(),
        });
        assert_eq!(OpRequest::decode(&r.encode()).unwrap(), r);
        let a = OpResponse::ReauthStarted(ReauthStarted {
            handshake: HandshakeId([4; 16]),
            message: Bytes::new(vec![5; 320]).unwrap(),
        });
        assert_eq!(OpResponse::decode(&a.encode()).unwrap(), a);
        let a = OpResponse::Reauthenticated(Reauthenticated { valid_secs: 300 });
        assert_eq!(OpResponse::decode(&a.encode()).unwrap(), a);
        let r = OpRequest::ReauthAbort(ReauthAbort {
            handshake: HandshakeId([6; 16]),
        });
        assert_eq!(OpRequest::decode(&r.encode()).unwrap(), r);
        let a = OpResponse::ReauthAborted(ReauthAborted {
            guesses_left: Some(7),
        });
        assert_eq!(OpResponse::decode(&a.encode()).unwrap(), a);
    }
}
