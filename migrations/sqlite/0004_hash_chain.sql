-- Tamper-evident history: each entry carries SHA-256(previous entry's hash || its canonical
-- encoding), per offering (docs/hash-chain.md), and the head keeps the latest hash so that an
-- append needs no extra read. The same columns as PostgreSQL's 0004.
--
-- Both columns are nullable only for rows recorded before the chain: adding them rewrites no
-- row, and subledger's migrate() fills them right after this migration (one transaction per
-- offering), so that no NULL remains once a server serves.
ALTER TABLE history_entry ADD COLUMN entry_hash BLOB CHECK (entry_hash IS NULL OR length(entry_hash) = 32);
ALTER TABLE offering_head ADD COLUMN last_hash BLOB CHECK (last_hash IS NULL OR length(last_hash) = 32);

-- Every entry appended from now on is hashed (SQLite cannot add a constraint to a table in
-- place, and a NOT NULL column would need a default: a trigger refuses the NULL instead).
CREATE TRIGGER history_entry_hashed
    BEFORE INSERT ON history_entry
    WHEN NEW.entry_hash IS NULL
    BEGIN SELECT RAISE(ABORT, 'history_entry.entry_hash is required'); END;
