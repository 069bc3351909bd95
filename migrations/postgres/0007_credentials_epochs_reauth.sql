-- Each account's own OPAQUE credential identifier: random at registration and at every
-- password change, so that the OPRF key of a name is fixed only once the name is
-- registered. Accounts registered before this migration were registered under their user
-- name, and keep it until their next password change.
ALTER TABLE accounts ADD COLUMN credential_id BYTEA NOT NULL DEFAULT ''::bytea;
UPDATE accounts SET credential_id = convert_to(user_name, 'UTF8');
ALTER TABLE accounts ALTER COLUMN credential_id DROP DEFAULT;

-- The account's epoch, bound into the sealed storage key's associated data: it grows with
-- every password change and key rotation, so an older (record, sealed key) pair restored
-- into the row does not open as the current one. New accounts start at 1; epoch 0 marks a
-- storage key sealed before epochs existed (associated data without one).
ALTER TABLE accounts ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;

-- When the session last proved its password (reauth): a password change or a key
-- rotation needs a fresh proof, whichever instance it runs on.
ALTER TABLE sessions ADD COLUMN reauthed_at BIGINT;

-- Secrets sealed under a new storage key by a key rotation in progress, by session; swapped
-- in all at once when the rotation finishes, dropped if it never does.
CREATE TABLE staged_secrets (
    session_id BYTEA  NOT NULL,
    account_id BIGINT NOT NULL REFERENCES accounts (id),
    name       TEXT COLLATE "C" NOT NULL,
    version    BIGINT NOT NULL CHECK (version > 0),
    sealed     BYTEA  NOT NULL,
    PRIMARY KEY (session_id, name)
);
