-- Each account's own OPAQUE credential identifier: random at registration and at every
-- password change, so that the OPRF key of a name is fixed only once the name is
-- registered. Accounts registered before this migration were registered under their user
-- name, and keep it until their next password change.
ALTER TABLE accounts ADD COLUMN credential_id BLOB NOT NULL DEFAULT X'';
UPDATE accounts SET credential_id = CAST(user_name AS BLOB);

-- The account's epoch, bound into the sealed storage key's associated data: it grows with
-- every password change and key rotation, so an older (record, sealed key) pair restored
-- into the row does not open as the current one. New accounts start at 1; epoch 0 marks a
-- storage key sealed before epochs existed (associated data without one).
ALTER TABLE accounts ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;

-- When the session last proved its password (reauth): a password change or a key
-- rotation needs a fresh proof, whichever instance it runs on.
ALTER TABLE sessions ADD COLUMN reauthed_at INTEGER;

-- Secrets sealed under a new storage key by a key rotation in progress, by session; swapped
-- in all at once when the rotation finishes, dropped if it never does.
CREATE TABLE staged_secrets (
    session_id BLOB    NOT NULL,
    account_id INTEGER NOT NULL REFERENCES accounts (id),
    name       TEXT    NOT NULL,
    version    INTEGER NOT NULL CHECK (version > 0),
    sealed     BLOB    NOT NULL,
    PRIMARY KEY (session_id, name)
) STRICT;
