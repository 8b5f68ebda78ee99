-- subledger on SQLite: the same tables, constraints and append-only triggers as on PostgreSQL.
-- Writers serialize on the database file (BEGIN IMMEDIATE), which plays the head row lock's part.
-- Timestamps are RFC 3339 text in UTC.

CREATE TABLE offering_head (
    offering_id            TEXT    PRIMARY KEY NOT NULL,
    name                   TEXT    NOT NULL,
    max_units              INTEGER NOT NULL CHECK (max_units > 0),
    -- 0 = no per-investor cap.
    max_units_per_investor INTEGER NOT NULL CHECK (max_units_per_investor >= 0 AND max_units_per_investor <= max_units),
    subscribed_units       INTEGER NOT NULL DEFAULT 0,
    investor_count         INTEGER NOT NULL DEFAULT 0 CHECK (investor_count >= 0),
    status                 INTEGER NOT NULL CHECK (status IN (1, 2, 3)),
    version                INTEGER NOT NULL CHECK (version >= 1),
    create_time            TEXT    NOT NULL,
    update_time            TEXT    NOT NULL,
    CONSTRAINT offering_head_within_cap CHECK (subscribed_units >= 0 AND subscribed_units <= max_units)
) STRICT;

CREATE TABLE investor_position (
    offering_id TEXT    NOT NULL REFERENCES offering_head (offering_id),
    investor_id TEXT    NOT NULL,
    units       INTEGER NOT NULL,
    update_time TEXT    NOT NULL,
    PRIMARY KEY (offering_id, investor_id),
    CONSTRAINT investor_position_not_negative CHECK (units >= 0)
) STRICT, WITHOUT ROWID;

CREATE TABLE history_entry (
    offering_id          TEXT    NOT NULL REFERENCES offering_head (offering_id),
    sequence             INTEGER NOT NULL CHECK (sequence >= 1),
    kind                 INTEGER NOT NULL CHECK (kind BETWEEN 1 AND 5),
    investor_id          TEXT    NOT NULL,
    units_delta          INTEGER NOT NULL,
    investor_units_after INTEGER NOT NULL CHECK (investor_units_after >= 0),
    offering_units_after INTEGER NOT NULL CHECK (offering_units_after >= 0),
    request_id           TEXT    NOT NULL,
    requested_units      INTEGER NOT NULL,
    expected_version     INTEGER NOT NULL,
    record_time          TEXT    NOT NULL,
    PRIMARY KEY (offering_id, sequence),
    CONSTRAINT history_entry_request_once UNIQUE (offering_id, request_id)
) STRICT, WITHOUT ROWID;

CREATE INDEX history_entry_by_investor ON history_entry (offering_id, investor_id, sequence);

CREATE TRIGGER history_entry_no_update
    BEFORE UPDATE ON history_entry
    BEGIN SELECT RAISE(ABORT, 'history_entry is append-only: UPDATE refused'); END;

CREATE TRIGGER history_entry_no_delete
    BEFORE DELETE ON history_entry
    BEGIN SELECT RAISE(ABORT, 'history_entry is append-only: DELETE refused'); END;
