-- Live (not deleted) secrets per account, kept by every store and delete in the same
-- transaction, so that the quota check reads one row instead of counting the account's
-- secrets on every new name.
ALTER TABLE accounts ADD COLUMN live_secrets INTEGER NOT NULL DEFAULT 0;
UPDATE accounts SET live_secrets =
    (SELECT COUNT(*) FROM secrets s WHERE s.account_id = accounts.id AND s.sealed IS NOT NULL);
