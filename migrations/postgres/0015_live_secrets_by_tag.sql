-- An account's live secrets in name order, without walking its deleted ones: a deleted
-- secret keeps its row (its version only grows), so an account that stored and deleted many
-- names would otherwise make every list walk all of them (a soak's throughput sank with them).
CREATE INDEX secrets_live ON secrets (account_id, tag) WHERE sealed IS NOT NULL;
