-- Who made each change: the principal whose call appended the entry.
--
-- Entries recorded before actors existed read as 'unknown': a constant default is stored once in
-- the catalogue, so no existing row is rewritten (the history is never rewritten) and the ALTER
-- takes no time on a long history. The default is then dropped, so that every new entry must name
-- its actor; the rows that predate the column keep reading 'unknown'.
ALTER TABLE history_entry ADD COLUMN actor text NOT NULL DEFAULT 'unknown';
ALTER TABLE history_entry ALTER COLUMN actor DROP DEFAULT;
