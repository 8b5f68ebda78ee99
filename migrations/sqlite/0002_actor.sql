-- Who made each change: the principal whose call appended the entry. Entries recorded before
-- actors existed read as 'unknown'; SQLite stores the default in the schema and rewrites no row.
-- (SQLite cannot drop a column default; subledger always writes the actor.)
ALTER TABLE history_entry ADD COLUMN actor TEXT NOT NULL DEFAULT 'unknown';
