-- The ledger's identity (src/signing.rs): a UUID made once, by the first migrate of this
-- database, that every signed digest covers, so that a digest signed for one ledger cannot pass
-- for one of another (a copy, a test database) even under the same key. One row, never changed:
-- the CHECK on `one_row` refuses a second, and the serving role needs only SELECT on it.
CREATE TABLE ledger (
    one_row boolean PRIMARY KEY DEFAULT true CHECK (one_row),
    ledger_id uuid NOT NULL
);

INSERT INTO ledger (ledger_id) VALUES (gen_random_uuid());
