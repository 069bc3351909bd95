//! Operations inside a session: the plaintext of sealed requests and responses.
//!
//! Each operation is one [`OpRequest`] variant answered by one [`OpResponse`] variant (or
//! [`OpResponse::Error`]). Secrets travel only as sealed blobs made by the client.

use serde::{Deserialize, Serialize};

use crate::{
    audit_chain::AuditEvent,
    codec::{self, Bytes},
    envelope::OpaqueBytes,
    error::{DecodeError, ErrorReply},
    limits::{MAX_SEALED_BODY, MAX_SEALED_SECRET, MAX_SEALED_STORAGE_KEY},
    names::SecretName,
};

/// A sealed secret as stored: see [`crate::seal`].
pub type SealedSecret = Bytes<MAX_SEALED_SECRET>;

/// A request inside a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpRequest {
    /// Store `sealed` as version `version` of `name`.
    ///
    /// Without `replace`, refused with `NAME_EXISTS` if the name holds a secret. Either way
    /// `version` must be the next version of the name (1 for a name never used; after a
    /// delete, versions go on counting), else `VERSION_MISMATCH` says which one is: the
    /// client then seals again under that version. The client chooses the version because
    /// it is sealed into the ciphertext's associated data.
    Store {
        /// The secret's name.
        name: SecretName,
        /// The version the blob was sealed for.
        version: u64,
        /// Whether an existing secret may be replaced by this new version.
        replace: bool,
        /// The sealed secret.
        sealed: SealedSecret,
    },
    /// Read the current version of `name`.
    Retrieve {
        /// The secret's name.
        name: SecretName,
    },
    /// One page of the account's secrets, in name order, starting after `after`.
    List {
        /// Where the previous page ended.
        after: Option<SecretName>,
    },
    /// Delete `name` (every version).
    Delete {
        /// The secret's name.
        name: SecretName,
    },
    /// One page of the account's audit events with seq greater than `after`.
    Audit {
        /// The seq of the last event already received (0 for the start).
        after: u64,
    },
    /// Change password, step 1: OPAQUE `RegistrationRequest` for the new password.
    ChangePasswordStart {
        /// OPAQUE `RegistrationRequest`.
        message: OpaqueBytes,
    },
    /// Change password, step 2: the new record and the storage key re-sealed under the new
    /// master key. Both replace the old ones in one transaction.
    ChangePasswordFinish {
        /// OPAQUE `RegistrationUpload`.
        upload: OpaqueBytes,
        /// The same storage key, sealed under the new master key.
        sealed_storage_key: Bytes<MAX_SEALED_STORAGE_KEY>,
    },
    /// Close the session.
    Logout,
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

/// A response inside a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResponse {
    /// The store was applied.
    Stored {
        /// The version now current.
        version: u64,
        /// When it was stored.
        created: i64,
    },
    /// The current version of a secret.
    Secret {
        /// Its version (also in the ciphertext's associated data).
        version: u64,
        /// When it was stored.
        created: i64,
        /// The sealed secret.
        sealed: SealedSecret,
    },
    /// A page of `list`.
    List {
        /// The entries, in name order.
        entries: Vec<SecretEntry>,
        /// Whether more pages follow.
        more: bool,
    },
    /// The secret was deleted.
    Deleted,
    /// A page of `audit`.
    Audit {
        /// The events, in seq order.
        events: Vec<AuditEvent>,
        /// Whether more pages follow.
        more: bool,
    },
    /// OPAQUE `RegistrationResponse` for the new password.
    ChangePasswordStarted {
        /// OPAQUE `RegistrationResponse`.
        message: OpaqueBytes,
    },
    /// The password was changed.
    PasswordChanged,
    /// The session is closed.
    LoggedOut,
    /// The operation failed.
    Error(ErrorReply),
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
    /// sequence number, and their responses recorded; reads may simply be sent again.
    pub fn is_mutation(&self) -> bool {
        matches!(
            self,
            Self::Store { .. }
                | Self::Delete { .. }
                | Self::ChangePasswordFinish { .. }
                | Self::Logout
        )
    }

    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Store { .. } => "store",
            Self::Retrieve { .. } => "retrieve",
            Self::List { .. } => "list",
            Self::Delete { .. } => "delete",
            Self::Audit { .. } => "audit",
            Self::ChangePasswordStart { .. } => "change_password_start",
            Self::ChangePasswordFinish { .. } => "change_password_finish",
            Self::Logout => "logout",
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

impl From<ErrorReply> for OpResponse {
    fn from(e: ErrorReply) -> Self {
        Self::Error(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        audit_chain::{EventBody, EventKind, Outcome},
        error::ErrorCode,
        limits::{AUDIT_PAGE, LIST_PAGE, MAX_SECRET_NAME},
    };
    use proptest::prelude::*;

    fn name(s: &str) -> SecretName {
        SecretName::new(s).unwrap()
    }

    #[test]
    fn every_request_round_trips() {
        let reqs = vec![
            OpRequest::Store {
                name: name("w"),
                version: 3,
                replace: true,
                sealed: Bytes::new(vec![1; 80]).unwrap(),
            },
            OpRequest::Retrieve { name: name("w") },
            OpRequest::List {
                after: Some(name("a")),
            },
            OpRequest::List { after: None },
            OpRequest::Delete { name: name("w") },
            OpRequest::Audit { after: 7 },
            OpRequest::ChangePasswordStart {
                message: Bytes::new(vec![2; 32]).unwrap(),
            },
            OpRequest::ChangePasswordFinish {
                upload: Bytes::new(vec![3; 192]).unwrap(),
                sealed_storage_key: Bytes::new(vec![4; 73]).unwrap(),
            },
            OpRequest::Logout,
        ];
        for r in reqs {
            assert_eq!(OpRequest::decode(&r.encode()).unwrap(), r);
        }
    }

    #[test]
    fn full_pages_of_the_largest_entries_fit_in_a_sealed_body() {
        let long = name(&"n".repeat(MAX_SECRET_NAME));
        let list = OpResponse::List {
            entries: vec![
                SecretEntry {
                    name: long.clone(),
                    version: u64::MAX,
                    size: u64::MAX,
                    created: i64::MIN
                };
                LIST_PAGE
            ],
            more: true,
        };
        assert!(list.encode().len() + 16 <= MAX_SEALED_BODY);
        let ev = AuditEvent {
            seq: u64::MAX,
            time: i64::MIN,
            body: EventBody::about(EventKind::Store, &long, Outcome::Refused),
            hash: [0xff; 32],
        };
        let audit = OpResponse::Audit {
            events: vec![ev; AUDIT_PAGE],
            more: true,
        };
        assert!(audit.encode().len() + 16 <= MAX_SEALED_BODY);
        assert_eq!(OpResponse::decode(&audit.encode()).unwrap(), audit);
    }

    #[test]
    fn an_error_round_trips() {
        let e = OpResponse::Error(ErrorReply {
            code: ErrorCode::VERSION_MISMATCH,
            retry_after_secs: None,
            expected_version: Some(4),
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
