-- Responses of applied mutations, by session and sequence number, written in the same
-- transaction as the mutation: a request that is retried or replayed, on any instance, is
-- applied at most once and gets its first answer.
CREATE TABLE session_responses (
    session_id BYTEA  NOT NULL,
    seq        BIGINT NOT NULL,
    response   BYTEA  NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (session_id, seq)
);

CREATE INDEX session_responses_created_at ON session_responses (created_at);
