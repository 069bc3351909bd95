-- The version of the secret an event concerned (stored, read or deleted): a verified chain
-- then shows which version of each secret is current. Empty for events about no secret, and
-- for events written before this migration (whose hashes do not cover a version).
ALTER TABLE audit_events ADD COLUMN version BIGINT;
