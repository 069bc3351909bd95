-- Secret names the operator cannot read (protocol 3): a secret is known by a tag (an HMAC of
-- its name under a key derived from the storage key) and keeps its name sealed by the
-- client; audit events refer to the tag. Nothing of protocol 2 was deployed, so nothing is
-- converted: a database that holds secrets, or audit events about them, stored under
-- protocol 2 is refused here (its names could not be sealed without the users' keys).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM secrets) OR EXISTS (SELECT 1 FROM audit_events WHERE secret IS NOT NULL) THEN
        RAISE EXCEPTION 'this database holds secrets or audit events of protocol 2, which protocol 3 cannot read (see spec/protocol.md, version 3)';
    END IF;
END $$;

DROP TABLE staged_secrets;
DROP TABLE secrets;

CREATE TABLE secrets (
    account_id  BIGINT NOT NULL REFERENCES accounts (id),
    tag         BYTEA  NOT NULL,
    sealed_name BYTEA  NOT NULL,
    version     BIGINT NOT NULL CHECK (version > 0),
    sealed      BYTEA,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (account_id, tag)
);

CREATE TABLE staged_secrets (
    session_id  BYTEA  NOT NULL,
    account_id  BIGINT NOT NULL REFERENCES accounts (id),
    tag         BYTEA  NOT NULL,
    new_tag     BYTEA  NOT NULL,
    sealed_name BYTEA  NOT NULL,
    version     BIGINT NOT NULL CHECK (version > 0),
    sealed      BYTEA,
    PRIMARY KEY (session_id, tag)
);

ALTER TABLE audit_events DROP COLUMN secret;
ALTER TABLE audit_events ADD COLUMN secret BYTEA;
