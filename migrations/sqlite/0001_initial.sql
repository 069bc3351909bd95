-- Accounts: the OPAQUE registration record and the storage key sealed under the user's
-- master key. Neither opens a secret without the user's password.
CREATE TABLE accounts (
    id                 INTEGER PRIMARY KEY,
    user_name          TEXT    NOT NULL UNIQUE,
    record             BLOB    NOT NULL,
    sealed_storage_key BLOB    NOT NULL,
    -- Logins started since the last one that finished (guess limiting).
    failed_logins      INTEGER NOT NULL DEFAULT 0,
    last_login_attempt INTEGER,
    -- Head of the audit chain: seq and hash of the last event.
    audit_seq          INTEGER NOT NULL DEFAULT 0,
    audit_head         BLOB    NOT NULL,
    created_at         INTEGER NOT NULL
) STRICT;

-- Secrets: ciphertext only. A deleted secret keeps its row with sealed = NULL, so that its
-- version counter survives and a re-stored name never reuses a version.
CREATE TABLE secrets (
    account_id INTEGER NOT NULL REFERENCES accounts (id),
    name       TEXT    NOT NULL,
    version    INTEGER NOT NULL CHECK (version > 0),
    sealed     BLOB,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (account_id, name)
) STRICT;

-- Audit events, hash-chained per account.
CREATE TABLE audit_events (
    account_id INTEGER NOT NULL REFERENCES accounts (id),
    seq        INTEGER NOT NULL CHECK (seq > 0),
    time       INTEGER NOT NULL,
    kind       INTEGER NOT NULL,
    secret     TEXT,
    outcome    INTEGER NOT NULL,
    hash       BLOB    NOT NULL,
    PRIMARY KEY (account_id, seq)
) STRICT;
