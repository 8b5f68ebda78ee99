-- (b) and (c) Exception and rollback, as teams often write it: append first, then re-check the
-- total against the cap and roll back (the "raise") if it is over. The same script runs at READ
-- COMMITTED (b) and at SERIALIZABLE (c): strategies.sh sets default_transaction_isolation.
-- At READ COMMITTED the re-check reads the committed head, which does not yet count the
-- concurrent transactions that have passed the same check and not yet committed.
\set o random(1, :offerings)
\set inv random(1, 100000)
\set n random(1, :units_max)
\set rid random(1, 9000000000000000000)
BEGIN;
SELECT count(*) AS seen FROM anchor_history WHERE offering_id = :o AND request_id = :rid::text \gset
INSERT INTO anchor_position (offering_id, investor_id, units) VALUES (:o, :inv, :n)
  ON CONFLICT (offering_id, investor_id) DO UPDATE SET units = anchor_position.units + EXCLUDED.units, update_time = now()
  RETURNING units AS inv_units \gset
INSERT INTO anchor_history (offering_id, sequence, investor_id, units_delta, investor_units_after, offering_units_after, request_id)
  SELECT :o, nextval('strategy_entry_sequence'), :inv, :n, :inv_units, subscribed_units + :n, :rid::text FROM anchor_head WHERE offering_id = :o;
SELECT (subscribed_units + :n <= max_units)::int AS fits FROM anchor_head WHERE offering_id = :o \gset
\if :fits
UPDATE anchor_head SET subscribed_units = subscribed_units + :n, version = version + 1, update_time = now() WHERE offering_id = :o;
END;
\else
ROLLBACK;
\endif
