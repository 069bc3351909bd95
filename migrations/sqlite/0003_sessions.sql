-- Open sessions, so that any instance (or this one after a restart) can carry a session on.
-- The keys are sealed under a key derived from the server's OPAQUE setup: this table alone
-- opens nothing. A session ends by logout (row deleted) or by expiry (purged).
CREATE TABLE sessions (
    id          BLOB    PRIMARY KEY,
    account_id  INTEGER NOT NULL REFERENCES accounts (id),
    sealed_keys BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    last_used   INTEGER NOT NULL
) STRICT;
