-- Open sessions, so that any instance of a fleet can carry a session on. The keys are
-- sealed under a key derived from the server's OPAQUE setup: this table alone opens
-- nothing. A session ends by logout (row deleted) or by expiry (purged).
CREATE TABLE sessions (
    id          BYTEA  PRIMARY KEY,
    account_id  BIGINT NOT NULL REFERENCES accounts (id),
    sealed_keys BYTEA  NOT NULL,
    created_at  BIGINT NOT NULL,
    last_used   BIGINT NOT NULL
);
