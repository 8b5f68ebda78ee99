-- Investors with a position, per offering, kept on the head: a new investor past
-- --max-investors-per-offering is refused without counting rows. Filled here from the positions
-- recorded so far; every release from this one on counts each position it creates.
ALTER TABLE offering_head ADD COLUMN position_count INTEGER NOT NULL DEFAULT 0 CHECK (position_count >= 0);
UPDATE offering_head SET position_count =
    (SELECT count(*) FROM investor_position AS p WHERE p.offering_id = offering_head.offering_id);
