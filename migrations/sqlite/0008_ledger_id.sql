-- The ledger's identity (src/signing.rs): a UUID made once, by the first migrate of this
-- database, that every signed digest covers, so that a digest signed for one ledger cannot pass
-- for one of another (a copy, a test database) even under the same key. One row, never changed:
-- the CHECK on `one_row` refuses a second.
CREATE TABLE ledger (
    one_row INTEGER PRIMARY KEY DEFAULT 1 CHECK (one_row = 1),
    ledger_id TEXT NOT NULL CHECK (length(ledger_id) = 36)
);

-- A version 4 UUID from SQLite's randomness, in its 36-character text form.
INSERT INTO ledger (ledger_id) VALUES (lower(
    hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2)
    || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2)
    || '-' || hex(randomblob(6))
));
