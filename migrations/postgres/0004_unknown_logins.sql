-- Guess counters for user names that do not exist, keyed by an HMAC of the name under a
-- server secret: logins for unknown names are counted and locked out exactly like real
-- ones (same replies, same database work), and the table does not list the names tried.
CREATE TABLE unknown_logins (
    name_key           BYTEA  PRIMARY KEY,
    failed_logins      BIGINT NOT NULL,
    last_login_attempt BIGINT NOT NULL
);
