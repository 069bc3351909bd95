//! `key-public`: a key's public key and what else the server says of it.

use serde::{Deserialize, Serialize};

use crate::{
    names::KeyName,
    signing::{Algorithm, PublicKey},
};

/// What the server holds of `name`. Refused with `NOT_FOUND` if there is no such key.
/// Answered with [`crate::OpResponse::Key`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPublic {
    /// The key's name.
    pub name: KeyName,
}

/// A key the server holds, as `generate`, `import`, `public`, `sign` and `list` describe it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// Its name.
    pub name: KeyName,
    /// Its algorithm.
    pub algorithm: Algorithm,
    /// Its public key (32 bytes for Ed25519, 33 compressed for secp256k1).
    pub public_key: PublicKey,
    /// Whether it may be exported.
    pub exportable: bool,
    /// When it was generated or imported (Unix seconds, server clock).
    pub created: i64,
    /// How many signatures the server made with it.
    pub signatures: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OpRequest, OpResponse, codec::Bytes};

    #[test]
    fn a_public_and_its_answer_round_trip() {
        let r = OpRequest::KeyPublic(KeyPublic {
            name: KeyName::new("eth-hot").unwrap(),
        });
        assert_eq!(OpRequest::decode(&r.encode()).unwrap(), r);
        let a = OpResponse::Key(KeyInfo {
            name: KeyName::new("eth-hot").unwrap(),
            algorithm: Algorithm::Secp256k1,
            public_key: Bytes::new(vec![2; 33]).unwrap(),
            exportable: false,
            created: 1,
            signatures: u64::MAX,
        });
        assert_eq!(OpResponse::decode(&a.encode()).unwrap(), a);
    }
}
