-- Counting an account's sessions (the per-account session limit) without a table scan.
CREATE INDEX sessions_account_id ON sessions (account_id);
