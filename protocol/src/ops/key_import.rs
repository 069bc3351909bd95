//! `key-import`: the user gives the server a private key to hold (one made elsewhere), which
//! it seals at rest as it does a key it made.

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::{
    names::KeyName,
    signing::{Algorithm, PRIVATE_KEY_LEN},
};

/// Raw private key bytes on the wire (inside the session channel), zeroized when dropped;
/// `Debug` shows none of them, equality is in constant time.
#[derive(Clone, Serialize, Deserialize)]
pub struct KeyMaterial(pub Zeroizing<[u8; PRIVATE_KEY_LEN]>);

impl KeyMaterial {
    /// Wraps `bytes`.
    pub fn new(bytes: [u8; PRIVATE_KEY_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The key bytes.
    pub fn expose_secret(&self) -> &[u8; PRIVATE_KEY_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyMaterial(REDACTED)")
    }
}

impl PartialEq for KeyMaterial {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&*other.0).into()
    }
}

impl Eq for KeyMaterial {}

/// Hold `private_key` as the key `name`. Refused with `MALFORMED` if it is not a key of
/// `algorithm` (for secp256k1, a scalar in `[1, n - 1]`), `NAME_EXISTS` and `QUOTA` as
/// [`super::key_generate::KeyGenerate`]. Answered with [`crate::OpResponse::Key`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyImport {
    /// The key's name.
    pub name: KeyName,
    /// Its algorithm.
    pub algorithm: Algorithm,
    /// The raw private key.
    pub private_key: KeyMaterial,
    /// Whether the user may export it again.
    pub exportable: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OpRequest;

    #[test]
    fn an_import_round_trips_and_shows_no_key() {
        let r = OpRequest::KeyImport(KeyImport {
            name: KeyName::new("legacy").unwrap(),
            algorithm: Algorithm::Ed25519,
            private_key: KeyMaterial::new([0xab; 32]),
            exportable: false,
        });
        assert_eq!(OpRequest::decode(&r.encode()).unwrap(), r);
        assert!(!format!("{r:?}").contains("171"));
        assert!(!format!("{r:?}").to_lowercase().contains("ab, "));
    }
}
