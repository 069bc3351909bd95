//! `key-delete`: the server forgets a key it holds, sealed private key and all. It needs a
//! fresh proof of the password ([`super::reauth`]): a key that was not exportable is gone for
//! good, and a stolen session must not be able to destroy it.

use serde::{Deserialize, Serialize};

use crate::names::KeyName;

/// Delete the key `name`. Refused with `NOT_FOUND` (no such key), `REAUTH_REQUIRED` (no
/// fresh reauth in this session). Answered with [`crate::OpResponse::KeyDeleted`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyDelete {
    /// The key's name.
    pub name: KeyName,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OpRequest, OpResponse};

    #[test]
    fn a_delete_and_its_answer_round_trip() {
        let r = OpRequest::KeyDelete(KeyDelete {
            name: KeyName::new("legacy").unwrap(),
        });
        assert_eq!(OpRequest::decode(&r.encode()).unwrap(), r);
        assert_eq!(
            OpResponse::decode(&OpResponse::KeyDeleted.encode()).unwrap(),
            OpResponse::KeyDeleted
        );
    }
}
