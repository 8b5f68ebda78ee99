-- The strategies' schema: the pg-anchor tables (../shared/bench/pg-anchor/schema.sql, applied
-- first), with two changes, so that each strategy's own concurrency control is all that stands
-- between a race and an oversold offering:
--  * the head's CHECK loses its upper bound. With `subscribed_units <= max_units` in place the
--    database itself refuses an oversold head (that constraint is exception-and-rollback done by
--    the database, and subledger keeps it as its last line of defence); here it would hide what
--    (b) and (e) do.
--  * history entries are numbered by one PostgreSQL sequence, as a ledger table usually is,
--    instead of the head's version + 1. A per-offering sequence read from the head makes the
--    history's primary key a second guard: two writers that read the same version collide on
--    it, and the race ends in a unique violation instead of an oversell.
-- usage: psql URL -v cap=N -f schema.sql   (N = every offering's max_units)
\set ON_ERROR_STOP on
ALTER TABLE anchor_head DROP CONSTRAINT anchor_head_check,
  ADD CONSTRAINT anchor_head_not_negative CHECK (subscribed_units >= 0);
CREATE SEQUENCE strategy_entry_sequence;
UPDATE anchor_head SET max_units = :cap;
VACUUM ANALYZE anchor_head;
