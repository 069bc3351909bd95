-- Keys the server holds for a user and signs with (protocol 4). The private key is sealed
-- under the deployment's data key for server-held keys, bound to the account, the key's name,
-- its algorithm and its public key: nothing here opens without that data key, and a row moved
-- to another account or name, or given another public key, no longer opens.
CREATE TABLE held_keys (
    account_id   INTEGER NOT NULL REFERENCES accounts (id),
    name         TEXT    NOT NULL,
    algorithm    INTEGER NOT NULL,
    public_key   BLOB    NOT NULL,
    sealed_key   BLOB    NOT NULL,
    exportable   INTEGER NOT NULL CHECK (exportable IN (0, 1)),
    created_at   INTEGER NOT NULL,
    -- Signatures ever made, and in the rate limit's current window.
    signatures   INTEGER NOT NULL DEFAULT 0 CHECK (signatures >= 0),
    window_start INTEGER NOT NULL DEFAULT 0,
    window_count INTEGER NOT NULL DEFAULT 0 CHECK (window_count >= 0),
    PRIMARY KEY (account_id, name)
) STRICT;

-- Events about a server-held key name it; a signature's event carries the SHA-256 of the
-- message signed.
ALTER TABLE audit_events ADD COLUMN key_name TEXT;
ALTER TABLE audit_events ADD COLUMN digest BLOB;
