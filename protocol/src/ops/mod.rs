//! Operations inside a session: the plaintext of sealed requests and responses.
//!
//! Each operation has its own module, named as the operation, holding its request and
//! response types; the server's handler and the client's method live in modules of the same
//! name in their crates. Each is one [`OpRequest`] variant answered by one [`OpResponse`]
//! variant (or [`OpResponse::Error`]). Secrets travel only as sealed blobs made by the client.
//!
//! The variants' order is their number on the wire (postcard): never reorder them; add new
//! ones at the end (`spec/vectors/messages.json` pins every variant's bytes).

pub mod audit;
pub mod change_password;
pub mod checkpoint;
pub mod delete;
pub mod key_delete;
pub mod key_export;
pub mod key_generate;
pub mod key_import;
pub mod key_list;
pub mod key_public;
pub mod key_sign;
pub mod list;
pub mod logout;
pub mod reauth;
pub mod retrieve;
pub mod rotate_key;
pub mod store;

use serde::{Deserialize, Serialize};

pub use self::{
    audit::{Audit, AuditPage},
    change_password::{ChangePasswordFinish, ChangePasswordStart, ChangePasswordStarted, Rekeyed},
    checkpoint::{CheckpointList, SaveCheckpoint, StoredCheckpoint},
    delete::Delete,
    key_delete::KeyDelete,
    key_export::{ExportedKey, KeyExport},
    key_generate::KeyGenerate,
    key_import::{KeyImport, KeyMaterial},
    key_list::{KeyList, KeyListPage},
    key_public::{KeyInfo, KeyPublic},
    key_sign::{KeySign, KeySignature},
    list::{List, ListPage, SecretEntry},
    reauth::{
        ReauthAbort, ReauthAborted, ReauthFinish, ReauthStart, ReauthStarted, Reauthenticated,
    },
    retrieve::{Retrieve, Secret},
    rotate_key::{RotateKeyFinish, RotateKeyStage, Staged, StagedSecret},
    store::{Store, Stored},
};
use crate::{
    audit_chain::AuditPosition,
    codec::{self, Bytes},
    error::{DecodeError, ErrorReply},
    limits::{MAX_SEALED_BODY, MAX_SEALED_SECRET},
};

/// A sealed secret as stored: see [`crate::seal`].
pub type SealedSecret = Bytes<MAX_SEALED_SECRET>;

/// A request inside a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpRequest {
    /// See [`store`].
    Store(Store),
    /// See [`retrieve`].
    Retrieve(Retrieve),
    /// See [`list`].
    List(List),
    /// See [`delete`].
    Delete(Delete),
    /// See [`audit`].
    Audit(Audit),
    /// See [`change_password`].
    ChangePasswordStart(ChangePasswordStart),
    /// See [`change_password`].
    ChangePasswordFinish(ChangePasswordFinish),
    /// See [`logout`].
    Logout,
    /// See [`reauth`].
    ReauthStart(ReauthStart),
    /// See [`reauth`].
    ReauthFinish(ReauthFinish),
    /// See [`rotate_key`].
    RotateKeyStage(RotateKeyStage),
    /// See [`rotate_key`].
    RotateKeyFinish(RotateKeyFinish),
    /// See [`reauth`].
    ReauthAbort(ReauthAbort),
    /// See [`checkpoint`].
    SaveCheckpoint(SaveCheckpoint),
    /// See [`checkpoint`]: the account's newest checkpoints.
    Checkpoints,
    /// See [`key_generate`].
    KeyGenerate(KeyGenerate),
    /// See [`key_import`].
    KeyImport(KeyImport),
    /// See [`key_sign`].
    KeySign(KeySign),
    /// See [`key_public`].
    KeyPublic(KeyPublic),
    /// See [`key_list`].
    KeyList(KeyList),
    /// See [`key_export`].
    KeyExport(KeyExport),
    /// See [`key_delete`].
    KeyDelete(KeyDelete),
}

/// A response inside a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResponse {
    /// Answers [`OpRequest::Store`].
    Stored(Stored),
    /// Answers [`OpRequest::Retrieve`].
    Secret(Secret),
    /// Answers [`OpRequest::List`].
    List(ListPage),
    /// Answers [`OpRequest::Delete`].
    Deleted,
    /// Answers [`OpRequest::Audit`].
    Audit(AuditPage),
    /// Answers [`OpRequest::ChangePasswordStart`].
    ChangePasswordStarted(ChangePasswordStarted),
    /// Answers [`OpRequest::ChangePasswordFinish`].
    PasswordChanged(Rekeyed),
    /// Answers [`OpRequest::Logout`].
    LoggedOut,
    /// The operation failed.
    Error(ErrorReply),
    /// Answers [`OpRequest::ReauthStart`].
    ReauthStarted(ReauthStarted),
    /// Answers [`OpRequest::ReauthFinish`].
    Reauthenticated(Reauthenticated),
    /// Answers [`OpRequest::RotateKeyStage`].
    Staged(Staged),
    /// Answers [`OpRequest::RotateKeyFinish`].
    KeyRotated(Rekeyed),
    /// Answers [`OpRequest::ReauthAbort`].
    ReauthAborted(ReauthAborted),
    /// Answers [`OpRequest::SaveCheckpoint`].
    CheckpointSaved,
    /// Answers [`OpRequest::Checkpoints`].
    Checkpoints(CheckpointList),
    /// Answers [`OpRequest::KeyGenerate`], [`OpRequest::KeyImport`] and
    /// [`OpRequest::KeyPublic`].
    Key(KeyInfo),
    /// Answers [`OpRequest::KeySign`].
    Signature(KeySignature),
    /// Answers [`OpRequest::KeyList`].
    Keys(KeyListPage),
    /// Answers [`OpRequest::KeyExport`].
    ExportedKey(ExportedKey),
    /// Answers [`OpRequest::KeyDelete`].
    KeyDeleted,
}

impl OpRequest {
    /// Encodes for sealing.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes an opened request body.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::decode(bytes, MAX_SEALED_BODY)
    }

    /// Whether the operation changes the account. Mutations are applied at most once per
    /// sequence number, and their responses recorded; reads may simply be sent again. (A
    /// key export writes its audit event but is no mutation: its answer, the private key,
    /// must never be recorded in the database.) (A
    /// reauth start counts a password guess, but is no mutation: like a login start it is
    /// never sent again by itself, see [`Self::is_guess`].)
    pub fn is_mutation(&self) -> bool {
        matches!(
            self,
            Self::Store(_)
                | Self::Delete(_)
                | Self::ChangePasswordFinish(_)
                | Self::Logout
                | Self::ReauthFinish(_)
                | Self::RotateKeyStage(_)
                | Self::RotateKeyFinish(_)
                | Self::SaveCheckpoint(_)
                | Self::KeyGenerate(_)
                | Self::KeyImport(_)
                | Self::KeySign(_)
                | Self::KeyDelete(_)
        )
    }

    /// Whether the operation counts a password guess: a client must not send it again
    /// after losing its connection (each copy would count), but report the loss.
    pub fn is_guess(&self) -> bool {
        matches!(self, Self::ReauthStart(_))
    }

    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Store(_) => "store",
            Self::Retrieve(_) => "retrieve",
            Self::List(_) => "list",
            Self::Delete(_) => "delete",
            Self::Audit(_) => "audit",
            Self::ChangePasswordStart(_) => "change_password_start",
            Self::ChangePasswordFinish(_) => "change_password_finish",
            Self::Logout => "logout",
            Self::ReauthStart(_) => "reauth_start",
            Self::ReauthFinish(_) => "reauth_finish",
            Self::RotateKeyStage(_) => "rotate_key_stage",
            Self::RotateKeyFinish(_) => "rotate_key_finish",
            Self::ReauthAbort(_) => "reauth_abort",
            Self::SaveCheckpoint(_) => "save_checkpoint",
            Self::Checkpoints => "checkpoints",
            Self::KeyGenerate(_) => "key_generate",
            Self::KeyImport(_) => "key_import",
            Self::KeySign(_) => "key_sign",
            Self::KeyPublic(_) => "key_public",
            Self::KeyList(_) => "key_list",
            Self::KeyExport(_) => "key_export",
            Self::KeyDelete(_) => "key_delete",
        }
    }
}

impl OpResponse {
    /// Encodes for sealing.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes an opened response body.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::decode(bytes, MAX_SEALED_BODY)
    }
}

/// What a sealed response carries: the operation's answer, and where the account's audit
/// chain stood when it was given (after the operation's own event, in the same
/// transaction), if the operation read it. A client refuses a position behind one it saw
/// before it sent the request: a server that went back (a database restored from a copy,
/// events deleted) is caught at the next answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpAnswer {
    /// The account's audit position.
    pub position: Option<AuditPosition>,
    /// The answer.
    pub response: OpResponse,
}

impl OpAnswer {
    /// Encodes for sealing.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes an opened response body.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::decode(bytes, MAX_SEALED_BODY)
    }
}

impl From<ErrorReply> for OpResponse {
    fn from(e: ErrorReply) -> Self {
        Self::Error(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use proptest::prelude::*;

    #[test]
    fn an_error_round_trips() {
        let e = OpResponse::Error(ErrorReply {
            code: ErrorCode::VERSION_MISMATCH,
            retry_after_secs: None,
            expected_version: Some(4),
            guesses_left: Some(2),
        });
        assert_eq!(OpResponse::decode(&e.encode()).unwrap(), e);
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(b in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = OpRequest::decode(&b);
            let _ = OpResponse::decode(&b);
        }
    }
}
