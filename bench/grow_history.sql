-- Creates an offering whose history already holds :entries entries (1 creation + subscriptions
-- of 1 unit each, round-robin over 1,000 investors), consistent with its head and positions, so
-- that VerifyOffering passes: for measuring how calls behave as history grows.
-- usage: psql "$DATABASE_URL" -v offering=grown-10m -v entries=10000000 -f bench/grow_history.sql
-- (on a database subledger has migrated; the offering must not exist yet), then
-- `subledger migrate --database-url "$DATABASE_URL"` to hash it
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
VALUES (:'offering', 'history growth ' || :'offering', 1000000000000000, 0, :entries - 1,
        LEAST(1000, :entries - 1), 1, :entries, now(), now());
INSERT INTO history_entry (offering_id, sequence, kind, investor_id, units_delta, investor_units_after,
                           offering_units_after, request_id, requested_units, expected_version, record_time)
VALUES (:'offering', 1, 1, '', 0, 0, 0, 'grow-create', 1000000000000000, 0, now());
-- Entry g (2..entries) is investor (g-2) % 1000's ((g-2) / 1000 + 1)-th unit.
INSERT INTO history_entry (offering_id, sequence, kind, investor_id, units_delta, investor_units_after,
                           offering_units_after, request_id, requested_units, expected_version, record_time)
SELECT :'offering', g, 2, 'investor-' || ((g - 2) % 1000), 1, (g - 2) / 1000 + 1, g - 1, 'grow-' || g, 1, 0, now()
FROM generate_series(2, :entries) AS g;
INSERT INTO investor_position (offering_id, investor_id, units, update_time)
SELECT :'offering', 'investor-' || i, (:entries - 2 - i) / 1000 + 1, now()
FROM generate_series(0, LEAST(999, :entries - 2)) AS i;
ALTER TABLE history_entry ADD CONSTRAINT history_entry_hashed CHECK (entry_hash IS NOT NULL) NOT VALID;
COMMIT;
ANALYZE history_entry;
