-- The SQLite twin of grow_history.sql: an offering whose history already holds :entries entries
-- (1 creation + 1-unit subscriptions round-robin over 1,000 investors), consistent with its head
-- and positions, so that VerifyOffering passes.
-- usage: sqlite3 data/subledger.db -cmd ".parameter set :offering grown-10m" \
--          -cmd ".parameter set :entries 10000000" < bench/grow_history_sqlite.sql
-- (on a file subledger has migrated; the offering must not exist yet), then
-- `subledger migrate --database-url sqlite://data/subledger.db` to hash it
.bail on
BEGIN IMMEDIATE;
-- The rows are written without entry_hash, as history recorded before the hash chain: the trigger
-- that refuses that is dropped for this transaction only and created again before COMMIT. The
-- head's last_hash stays NULL, so the next `subledger migrate` (serve runs it too) hashes this
-- history, with the server's own code (docs/hash-chain.md).
DROP TRIGGER history_entry_hashed;
INSERT INTO offering_head (offering_id, name, max_units, max_units_per_investor, subscribed_units,
                           investor_count, status, version, create_time, update_time)
VALUES (:offering, 'history growth ' || :offering, 1000000000000000, 0, :entries - 1,
        MIN(1000, :entries - 1), 1, :entries,
        strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'), strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'));
INSERT INTO history_entry (offering_id, sequence, kind, investor_id, units_delta, investor_units_after,
                           offering_units_after, request_id, requested_units, expected_version, record_time)
VALUES (:offering, 1, 1, '', 0, 0, 0, 'grow-create', 1000000000000000, 0, strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'));
-- Entry g (2..entries) is investor (g-2) % 1000's ((g-2) / 1000 + 1)-th unit.
WITH RECURSIVE g(n) AS (SELECT 2 UNION ALL SELECT n + 1 FROM g WHERE n < :entries)
INSERT INTO history_entry (offering_id, sequence, kind, investor_id, units_delta, investor_units_after,
                           offering_units_after, request_id, requested_units, expected_version, record_time)
SELECT :offering, n, 2, 'investor-' || ((n - 2) % 1000), 1, (n - 2) / 1000 + 1, n - 1, 'grow-' || n, 1, 0,
       strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')
FROM g;
WITH RECURSIVE i(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM i WHERE n < MIN(999, :entries - 2))
INSERT INTO investor_position (offering_id, investor_id, units, update_time)
SELECT :offering, 'investor-' || n, (:entries - 2 - n) / 1000 + 1, strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')
FROM i;
CREATE TRIGGER history_entry_hashed
    BEFORE INSERT ON history_entry
    WHEN NEW.entry_hash IS NULL
    BEGIN SELECT RAISE(ABORT, 'history_entry.entry_hash is required'); END;
COMMIT;
ANALYZE;
