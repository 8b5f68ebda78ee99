-- Creates :count OPEN offerings strategy-1 .. strategy-N, each capped at :cap units, directly in
-- subledger's schema (as bench/grow_history.sql does): the spread sell-out for strategy (f), which
-- `subledger bench --scenario spread --offering ...` then loads. Creating them over gRPC would do
-- the same, one call each.
-- usage: psql URL -v count=1000 -v cap=4 -f subledger_offerings.sql   (on a migrated database), then
-- `subledger migrate` to hash their history
\set ON_ERROR_STOP on
BEGIN;
-- The rows are written without entry_hash, as history recorded before the hash chain: its CHECK
-- is dropped for this transaction only and added back (NOT VALID: new rows only) before COMMIT.
-- The head's last_hash stays NULL, so the next `subledger migrate` (serve runs it too) hashes
-- this history, with the server's own code (docs/hash-chain.md). Until then subledger refuses
-- to append to the offering.
ALTER TABLE history_entry DROP CONSTRAINT history_entry_hashed;
INSERT INTO offering_head (offering_id, name, max_units, max_units_per_investor, subscribed_units,
                           investor_count, status, version, create_time, update_time)
SELECT 'strategy-' || g, 'strategies sell-out ' || g, :cap, 0, 0, 0, 1, 1, now(), now()
FROM generate_series(1, :count) AS g;
INSERT INTO history_entry (offering_id, sequence, kind, investor_id, units_delta, investor_units_after,
                           offering_units_after, request_id, requested_units, expected_version, record_time)
SELECT 'strategy-' || g, 1, 1, '', 0, 0, 0, 'create-strategy-' || g, :cap, 0, now()
FROM generate_series(1, :count) AS g;
ALTER TABLE history_entry ADD CONSTRAINT history_entry_hashed CHECK (entry_hash IS NOT NULL) NOT VALID;
COMMIT;
