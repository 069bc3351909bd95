-- The deployment's keyring: its id, the key-encryption key (a KMS key or a key file) and
-- every data key wrapped by it, with the OPAQUE setup sealed under its data key. Nothing
-- in it opens without the key-encryption key, which is never here. Every instance of a
-- fleet reads it at start, so that a new instance needs only the database URL, its TLS
-- material and access to the key-encryption key. One row; `generation` grows at every
-- re-wrapping (rotate-kek), which replaces the row only if no other did meanwhile.
CREATE TABLE keyring (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    generation BIGINT NOT NULL CHECK (generation > 0),
    body       BYTEA NOT NULL
);
