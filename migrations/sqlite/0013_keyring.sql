-- The deployment's keyring: its id, the key-encryption key (a KMS key or a key file) and
-- every data key wrapped by it, with the OPAQUE setup sealed under its data key. Nothing
-- in it opens without the key-encryption key, which is never here. One row; `generation`
-- grows at every re-wrapping (rotate-kek), which replaces the row only if no other did
-- meanwhile.
CREATE TABLE keyring (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL CHECK (generation > 0),
    body       BLOB NOT NULL
) STRICT;
