-- Audit positions that a client verified, left for the account's other devices, with a MAC
-- under a key derived from the storage key (which the server never has): a new device
-- starts from the newest one that verifies. At most a few per account, the newest; only
-- positions that are in the account's chain.
CREATE TABLE checkpoints (
    account_id INTEGER NOT NULL REFERENCES accounts (id),
    seq        INTEGER NOT NULL CHECK (seq > 0),
    head       BLOB NOT NULL,
    mac        BLOB NOT NULL,
    created    INTEGER NOT NULL,
    PRIMARY KEY (account_id, seq)
) STRICT;
