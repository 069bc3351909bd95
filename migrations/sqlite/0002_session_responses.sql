-- Responses of applied mutations, by session and sequence number, written in the same
-- transaction as the mutation: a request that is retried (after a lost connection) or
-- replayed is applied at most once and gets its first answer. Rows are purged once their
-- session can no longer exist.
CREATE TABLE session_responses (
    session_id BLOB    NOT NULL,
    seq        INTEGER NOT NULL,
    response   BLOB    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (session_id, seq)
) STRICT;

CREATE INDEX session_responses_created_at ON session_responses (created_at);
