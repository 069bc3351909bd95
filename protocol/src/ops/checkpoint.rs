//! `checkpoint`: a client leaves a checkpoint of an audit position it verified
//! ([`crate::checkpoint`]), and a client with no memory of the account reads the newest
//! ones. The server keeps at most [`MAX_CHECKPOINTS`] per account, the newest, and only of
//! positions that are in the account's chain; it cannot make or check their MACs.

use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;

/// Checkpoints kept per account, and listed at most.
pub const MAX_CHECKPOINTS: usize = 8;

/// Leaves a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaveCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
}

/// A checkpoint as the server keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// When it was left (Unix seconds, by the server's clock: not authenticated).
    pub time: i64,
}

/// The account's newest checkpoints, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointList {
    /// At most [`MAX_CHECKPOINTS`].
    pub checkpoints: Vec<StoredCheckpoint>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OpRequest, OpResponse, audit_chain::AuditPosition};

    #[test]
    fn checkpoints_and_their_answers_round_trip() {
        let c = Checkpoint {
            position: AuditPosition {
                seq: 9,
                head: [1; 32],
            },
            mac: [2; 32],
        };
        let r = OpRequest::SaveCheckpoint(SaveCheckpoint { checkpoint: c });
        assert_eq!(OpRequest::decode(&r.encode()).unwrap(), r);
        let r = OpRequest::Checkpoints;
        assert_eq!(OpRequest::decode(&r.encode()).unwrap(), r);
        let a = OpResponse::Checkpoints(CheckpointList {
            checkpoints: vec![
                StoredCheckpoint {
                    checkpoint: c,
                    time: 5,
                };
                MAX_CHECKPOINTS
            ],
        });
        assert_eq!(OpResponse::decode(&a.encode()).unwrap(), a);
        assert_eq!(
            OpResponse::decode(&OpResponse::CheckpointSaved.encode()).unwrap(),
            OpResponse::CheckpointSaved
        );
    }
}
