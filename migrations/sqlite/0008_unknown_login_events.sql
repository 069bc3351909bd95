-- An unknown name's stand-in for an account's audit chain. Where a real account appends an
-- event (a login started, failed or locked out), an unknown name appends one here, of the
-- same shape under the same kind of key, and moves its own head: the same durable write on
-- the same path, so that the time a reply takes does not tell a taken name from a free one.
-- No one reads these events; they go with their name's counter when it is purged. Names
-- appear only by their keyed hash, and the chain starts from that hash, not the name.
ALTER TABLE unknown_logins ADD COLUMN events INTEGER NOT NULL DEFAULT 0;
ALTER TABLE unknown_logins ADD COLUMN head BLOB;

CREATE TABLE unknown_events (
    name_key BLOB    NOT NULL,
    seq      INTEGER NOT NULL CHECK (seq > 0),
    time     INTEGER NOT NULL,
    kind     INTEGER NOT NULL,
    outcome  INTEGER NOT NULL,
    hash     BLOB    NOT NULL,
    PRIMARY KEY (name_key, seq)
) STRICT;
