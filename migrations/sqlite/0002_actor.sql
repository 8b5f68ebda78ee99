-- Who made each change: the principal whose call appended the entry. Entries recorded before
-- actors existed, or appended by a process of the previous version during an upgrade, read as
-- 'unknown'; SQLite stores the default in the schema and rewrites no row. subledger itself
-- always writes the actor.
ALTER TABLE history_entry ADD COLUMN actor TEXT NOT NULL DEFAULT 'unknown';
