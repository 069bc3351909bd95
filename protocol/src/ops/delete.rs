//! `delete`: removes a secret (every version). Its version counter survives, so a name
//! stored again never reuses a version.

use serde::{Deserialize, Serialize};

use crate::names::NameTag;

/// Delete the secret tagged `tag`. Refused with `NOT_FOUND` if there is no such secret.
/// Answered with [`crate::OpResponse::Deleted`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delete {
    /// The secret's name tag.
    pub tag: NameTag,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OpRequest, OpResponse};

    #[test]
    fn a_delete_and_its_answer_round_trip() {
        let r = OpRequest::Delete(Delete {
            tag: NameTag([2; 32]),
        });
        assert_eq!(OpRequest::decode(&r.encode()).unwrap(), r);
        assert_eq!(
            OpResponse::decode(&OpResponse::Deleted.encode()).unwrap(),
            OpResponse::Deleted
        );
    }
}
