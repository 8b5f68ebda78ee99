-- Tamper-evident history: each entry carries SHA-256(previous entry's hash || its canonical
-- encoding), per offering (docs/hash-chain.md), and the head keeps the latest hash so that an
-- append needs no extra read.
--
-- Both columns are nullable only for rows recorded before the chain: adding them rewrites no
-- row, and subledger's migrate() fills them right after this migration (one transaction per
-- offering, under its head lock), so that no NULL remains once a server serves.
ALTER TABLE history_entry ADD COLUMN entry_hash bytea CHECK (entry_hash IS NULL OR length(entry_hash) = 32);
ALTER TABLE offering_head ADD COLUMN last_hash bytea CHECK (last_hash IS NULL OR length(last_hash) = 32);

-- Every entry appended from now on is hashed. NOT VALID: checked for new and updated rows only,
-- so the old ones (hashed by the backfill) are not scanned here. A replica of the previous
-- release cannot append during a rolling upgrade: its inserts are refused, and it answers
-- the caller with an error to retry on an upgraded replica.
ALTER TABLE history_entry ADD CONSTRAINT history_entry_hashed CHECK (entry_hash IS NOT NULL) NOT VALID;
