-- no-transaction
-- Offerings as issuers run them: the same columns and checks as PostgreSQL's 0003. SQLite cannot
-- change a CHECK constraint in place, so offering_head (status 4) and history_entry (kinds 6 and
-- 7) are rebuilt as SQLite's documented procedure has it: with foreign keys off (dropping a
-- parent table would otherwise count its children as orphans for good), in one transaction of
-- our own, create the new table, copy every row, drop the old one, rename. The copy of
-- history_entry is an INSERT, which its append-only triggers allow; they are recreated on the
-- new table. Rows are copied unchanged, so every reference still finds its parent.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;

CREATE TABLE offering_head_new (
    offering_id            TEXT    PRIMARY KEY NOT NULL,
    name                   TEXT    NOT NULL,
    max_units              INTEGER NOT NULL CHECK (max_units > 0),
    max_units_per_investor INTEGER NOT NULL CHECK (max_units_per_investor >= 0 AND max_units_per_investor <= max_units),
    subscribed_units       INTEGER NOT NULL DEFAULT 0,
    investor_count         INTEGER NOT NULL DEFAULT 0 CHECK (investor_count >= 0),
    status                 INTEGER NOT NULL CHECK (status IN (1, 2, 3, 4)),
    version                INTEGER NOT NULL CHECK (version >= 1),
    create_time            TEXT    NOT NULL,
    update_time            TEXT    NOT NULL,
    allocation             INTEGER NOT NULL DEFAULT 1 CHECK (allocation IN (1, 2)),
    open_time              TEXT,
    close_time             TEXT,
    lot_units              INTEGER NOT NULL DEFAULT 0 CHECK (lot_units >= 0),
    min_units_per_investor INTEGER NOT NULL DEFAULT 0 CHECK (min_units_per_investor >= 0),
    max_total_demand       INTEGER NOT NULL DEFAULT 0 CHECK (max_total_demand >= 0),
    demanded_units         INTEGER NOT NULL DEFAULT 0 CHECK (demanded_units >= 0),
    CONSTRAINT offering_head_within_cap CHECK (subscribed_units >= 0 AND subscribed_units <= max_units),
    CONSTRAINT offering_head_window CHECK (open_time IS NULL OR close_time IS NULL OR open_time < close_time)
) STRICT;
INSERT INTO offering_head_new (offering_id, name, max_units, max_units_per_investor, subscribed_units,
                               investor_count, status, version, create_time, update_time)
SELECT offering_id, name, max_units, max_units_per_investor, subscribed_units, investor_count, status,
       version, create_time, update_time
FROM offering_head;
DROP TABLE offering_head;
ALTER TABLE offering_head_new RENAME TO offering_head;

ALTER TABLE investor_position ADD COLUMN demanded_units INTEGER NOT NULL DEFAULT 0 CHECK (demanded_units >= 0);
ALTER TABLE investor_position ADD COLUMN first_sequence INTEGER NOT NULL DEFAULT 0 CHECK (first_sequence >= 0);

CREATE TABLE history_entry_new (
    offering_id                   TEXT    NOT NULL REFERENCES offering_head (offering_id),
    sequence                      INTEGER NOT NULL CHECK (sequence >= 1),
    kind                          INTEGER NOT NULL CHECK (kind BETWEEN 1 AND 7),
    investor_id                   TEXT    NOT NULL,
    units_delta                   INTEGER NOT NULL,
    investor_units_after          INTEGER NOT NULL CHECK (investor_units_after >= 0),
    offering_units_after          INTEGER NOT NULL CHECK (offering_units_after >= 0),
    request_id                    TEXT    NOT NULL,
    requested_units               INTEGER NOT NULL,
    expected_version              INTEGER NOT NULL,
    record_time                   TEXT    NOT NULL,
    actor                         TEXT    NOT NULL DEFAULT 'unknown',
    demand_delta                  INTEGER NOT NULL DEFAULT 0,
    investor_demand_after         INTEGER NOT NULL DEFAULT 0 CHECK (investor_demand_after >= 0),
    offering_demand_after         INTEGER NOT NULL DEFAULT 0 CHECK (offering_demand_after >= 0),
    before_name                   TEXT,
    before_max_units              INTEGER,
    before_max_units_per_investor INTEGER,
    before_close_time             TEXT,
    after_name                    TEXT,
    after_max_units               INTEGER,
    after_max_units_per_investor  INTEGER,
    after_close_time              TEXT,
    PRIMARY KEY (offering_id, sequence),
    CONSTRAINT history_entry_request_once UNIQUE (offering_id, request_id)
) STRICT, WITHOUT ROWID;
INSERT INTO history_entry_new (offering_id, sequence, kind, investor_id, units_delta, investor_units_after,
                               offering_units_after, request_id, requested_units, expected_version,
                               record_time, actor)
SELECT offering_id, sequence, kind, investor_id, units_delta, investor_units_after, offering_units_after,
       request_id, requested_units, expected_version, record_time, actor
FROM history_entry;
DROP TABLE history_entry;
ALTER TABLE history_entry_new RENAME TO history_entry;

CREATE INDEX history_entry_by_investor ON history_entry (offering_id, investor_id, sequence);

CREATE TRIGGER history_entry_no_update
    BEFORE UPDATE ON history_entry
    BEGIN SELECT RAISE(ABORT, 'history_entry is append-only: UPDATE refused'); END;

CREATE TRIGGER history_entry_no_delete
    BEFORE DELETE ON history_entry
    BEGIN SELECT RAISE(ABORT, 'history_entry is append-only: DELETE refused'); END;

COMMIT;
PRAGMA foreign_keys = ON;
