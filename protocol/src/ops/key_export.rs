//! `key-export`: the private key of a key made exportable, to its user. It needs a fresh
//! proof of the password ([`super::reauth`]): a stolen session cannot take a key away. Its
//! answer is never recorded (it would put the key in the database): an export that is lost
//! on the way is asked for again, and logged again.

use serde::{Deserialize, Serialize};

use super::key_import::KeyMaterial;
use crate::{
    names::KeyName,
    signing::{Algorithm, PublicKey},
};

/// Export the key `name`. Refused with `NOT_FOUND` (no such key), `NOT_EXPORTABLE` (it was
/// not made exportable), `REAUTH_REQUIRED` (no fresh reauth in this session). Answered with
/// [`crate::OpResponse::ExportedKey`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyExport {
    /// The key's name.
    pub name: KeyName,
}

/// An exported key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedKey {
    /// Its algorithm.
    pub algorithm: Algorithm,
    /// Its public key (the client checks the private key against it).
    pub public_key: PublicKey,
    /// The raw private key.
    pub private_key: KeyMaterial,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OpRequest, OpResponse, codec::Bytes};

    #[test]
    fn an_export_and_its_answer_round_trip() {
        let r = OpRequest::KeyExport(KeyExport {
            name: KeyName::new("deploy").unwrap(),
        });
        assert_eq!(OpRequest::decode(&r.encode()).unwrap(), r);
        let a = OpResponse::ExportedKey(ExportedKey {
            algorithm: Algorithm::Ed25519,
            public_key: Bytes::new(vec![1; 32]).unwrap(),
            private_key: KeyMaterial::new([9; 32]),
        });
        assert_eq!(OpResponse::decode(&a.encode()).unwrap(), a);
    }
}
