-- Secret names the operator cannot read (protocol 3): a secret is known by a tag (an HMAC of
-- its name under a key derived from the storage key) and keeps its name sealed by the
-- client; audit events refer to the tag. Nothing of protocol 2 was deployed, so nothing is
-- converted: a database that holds secrets, or audit events about them, stored under
-- protocol 2 is refused here (its names could not be sealed without the users' keys).
CREATE TEMP TABLE protocol_2_data (
    rows INTEGER CONSTRAINT "this database holds secrets or audit events of protocol 2, which protocol 3 cannot read (see spec/protocol.md, version 3)" CHECK (rows = 0)
);
INSERT INTO protocol_2_data
    SELECT (SELECT COUNT(*) FROM secrets)
         + (SELECT COUNT(*) FROM audit_events WHERE secret IS NOT NULL);
DROP TABLE protocol_2_data;

DROP TABLE staged_secrets;
DROP TABLE secrets;

CREATE TABLE secrets (
    account_id  INTEGER NOT NULL REFERENCES accounts (id),
    tag         BLOB    NOT NULL,
    sealed_name BLOB    NOT NULL,
    version     INTEGER NOT NULL CHECK (version > 0),
    sealed      BLOB,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (account_id, tag)
) STRICT;

CREATE TABLE staged_secrets (
    session_id  BLOB    NOT NULL,
    account_id  INTEGER NOT NULL REFERENCES accounts (id),
    tag         BLOB    NOT NULL,
    new_tag     BLOB    NOT NULL,
    sealed_name BLOB    NOT NULL,
    version     INTEGER NOT NULL CHECK (version > 0),
    sealed      BLOB,
    PRIMARY KEY (session_id, tag)
) STRICT;

ALTER TABLE audit_events DROP COLUMN secret;
ALTER TABLE audit_events ADD COLUMN secret BLOB;
