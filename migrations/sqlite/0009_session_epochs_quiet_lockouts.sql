-- A session lives in one epoch of its account: its sealed keys are bound to it, and it ends
-- when a password change or key rotation in another session moves the account on. Sessions
-- sealed before this migration do not open under the new binding: their users log in again.
DELETE FROM sessions;
ALTER TABLE sessions ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;

-- Whether the current lockout's first refusal is in the log: later refusals of the same
-- lockout write nothing, so that logins refused while an account is locked cannot grow its
-- audit chain (or an unknown name's stand-in) without bound. 0 or 1.
ALTER TABLE accounts ADD COLUMN lockout_logged INTEGER NOT NULL DEFAULT 0;
ALTER TABLE unknown_logins ADD COLUMN lockout_logged INTEGER NOT NULL DEFAULT 0;
