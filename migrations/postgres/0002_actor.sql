-- Who made each change: the principal whose call appended the entry.
--
-- Entries recorded before actors existed read as 'unknown': a constant default is stored once in
-- the catalogue, so no existing row is rewritten (the history is never rewritten) and the ALTER
-- takes no time on a long history. The default stays: during a rolling upgrade, replicas still on
-- the previous version append entries without naming an actor, and those honestly read 'unknown'
-- instead of failing. subledger itself always writes the actor.
ALTER TABLE history_entry ADD COLUMN actor text NOT NULL DEFAULT 'unknown';
