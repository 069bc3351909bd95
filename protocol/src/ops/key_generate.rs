//! `key-generate`: the server makes a key pair of the user's chosen algorithm, seals the
//! private key at rest and answers the public key. The private key is never sent anywhere
//! unless the key was made exportable and the user exports it ([`super::key_export`]).

use serde::{Deserialize, Serialize};

use crate::{names::KeyName, signing::Algorithm};

/// Make a key named `name`. Refused with `NAME_EXISTS` if the account holds a key of that
/// name, `QUOTA` if it holds as many keys as it may. Answered with
/// [`crate::OpResponse::Key`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyGenerate {
    /// The key's name.
    pub name: KeyName,
    /// Its algorithm.
    pub algorithm: Algorithm,
    /// Whether the user may export the private key later (fixed for the key's life).
    pub exportable: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OpRequest;

    #[test]
    fn a_generate_round_trips() {
        for algorithm in Algorithm::ALL {
            let r = OpRequest::KeyGenerate(KeyGenerate {
                name: KeyName::new("eth-hot").unwrap(),
                algorithm,
                exportable: true,
            });
            assert_eq!(OpRequest::decode(&r.encode()).unwrap(), r);
        }
    }
}
