-- Accounts: the OPAQUE registration record and the storage key sealed under the user's
-- master key. Neither opens a secret without the user's password.
CREATE TABLE accounts (
    id                 BIGSERIAL PRIMARY KEY,
    user_name          TEXT COLLATE "C" NOT NULL UNIQUE,
    record             BYTEA  NOT NULL,
    sealed_storage_key BYTEA  NOT NULL,
    -- Logins started since the last one that finished (guess limiting).
    failed_logins      BIGINT NOT NULL DEFAULT 0,
    last_login_attempt BIGINT,
    -- Head of the audit chain: seq and hash of the last event.
    audit_seq          BIGINT NOT NULL DEFAULT 0,
    audit_head         BYTEA  NOT NULL,
    created_at         BIGINT NOT NULL
);

-- Secrets: ciphertext only. A deleted secret keeps its row with sealed = NULL, so that its
-- version counter survives and a re-stored name never reuses a version. Names compare as
-- bytes (COLLATE "C"), as in SQLite, so list pages are the same on both backends.
CREATE TABLE secrets (
    account_id BIGINT NOT NULL REFERENCES accounts (id),
    name       TEXT COLLATE "C" NOT NULL,
    version    BIGINT NOT NULL CHECK (version > 0),
    sealed     BYTEA,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (account_id, name)
);

-- Audit events, hash-chained per account.
CREATE TABLE audit_events (
    account_id BIGINT NOT NULL REFERENCES accounts (id),
    seq        BIGINT NOT NULL CHECK (seq > 0),
    time       BIGINT NOT NULL,
    kind       BIGINT NOT NULL,
    secret     TEXT COLLATE "C",
    outcome    BIGINT NOT NULL,
    hash       BYTEA  NOT NULL,
    PRIMARY KEY (account_id, seq)
);
