//! User names and secret names: validated when made and when decoded, so the rest of the
//! code never sees an empty, oversized or control-character name.

use serde::{Deserialize, Serialize};

use crate::limits::{MAX_SECRET_NAME, MAX_USER_NAME};

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("the name is empty")]
    Empty,
    /// The name is longer than its bound.
    #[error("the name is longer than {0} bytes")]
    TooLong(usize),
    /// The name has a control character or leading/trailing white space.
    #[error("the name has control characters or leading or trailing spaces")]
    BadCharacter,
}

fn check(name: &str, max: usize) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > max {
        return Err(NameError::TooLong(max));
    }
    // Control characters would let a name forge lines in `list` and `audit` output.
    if name.chars().any(char::is_control) || name.trim() != name {
        return Err(NameError::BadCharacter);
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl $ty {
            /// Validates and wraps `name`.
            pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
                let name = name.into();
                check(&name, $max)?;
                Ok(Self(name))
            }

            /// The name.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $ty {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl From<$ty> for String {
            fn from(n: $ty) -> String {
                n.0
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
    };
}

name_type!(
    /// A user name: 1 to 64 bytes of UTF-8, no control characters. It is also OPAQUE's
    /// credential identifier and client identity, and part of every sealed secret's
    /// associated data.
    UserName,
    MAX_USER_NAME
);

name_type!(
    /// A secret's name: 1 to 128 bytes of UTF-8, no control characters.
    SecretName,
    MAX_SECRET_NAME
);

name_type!(
    /// The name of a key the server holds ([`crate::ops::key_generate`]): the same limits as
    /// a secret's name, in a namespace of its own. Unlike a secret's name it is not sealed:
    /// the server uses the key on the user's request, sees its public key and every message
    /// it signs, and names it in the account's audit events.
    KeyName,
    MAX_SECRET_NAME
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    #[test]
    fn refuses_empty_long_and_control_names() {
        assert_eq!(UserName::new(""), Err(NameError::Empty));
        assert_eq!(UserName::new("a".repeat(65)), Err(NameError::TooLong(64)));
        assert!(UserName::new("a".repeat(64)).is_ok());
        assert_eq!(SecretName::new("x\ny"), Err(NameError::BadCharacter));
        assert_eq!(SecretName::new(" x"), Err(NameError::BadCharacter));
        assert!(SecretName::new("wallet seed (2024)").is_ok());
        assert_eq!(KeyName::new("a".repeat(129)), Err(NameError::TooLong(128)));
        assert_eq!(KeyName::new("eth\u{0}hot"), Err(NameError::BadCharacter));
        assert!(KeyName::new("eth-hot").is_ok());
    }

    #[test]
    fn decoding_validates_names() {
        let bad = encode(&"bad\u{7}name".to_string());
        assert!(decode::<SecretName>(&bad, 1000).is_err());
        let good = encode(&"ok".to_string());
        assert_eq!(decode::<SecretName>(&good, 1000).unwrap().as_str(), "ok");
    }
}

/// A secret's name as the server knows it: an HMAC of the name under a key derived from
/// the account's storage key ([`crate::seal::StorageKey::name_tag`]). The server looks
/// secrets up by it and cannot read or guess the name from it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NameTag(pub [u8; 32]);

impl std::fmt::Debug for NameTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "NameTag({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// A secret's name sealed by the client ([`crate::seal::StorageKey::seal_name`]), which
/// the server keeps beside its tag so that `list` can give names back.
pub type SealedName = crate::codec::Bytes<{ crate::limits::MAX_SEALED_NAME }>;
