-- Publication of the history to NATS JetStream (src/publish): which replica publishes, and how
-- far each offering's history has been published. See migrations/postgres/0006_publication.sql.
--
-- expires_at is milliseconds since the Unix epoch, by the database's clock
-- ((julianday('now') - 2440587.5) * 86400000).
CREATE TABLE publication_lease (
    name       TEXT    PRIMARY KEY,
    holder     TEXT    NOT NULL,
    epoch      INTEGER NOT NULL CHECK (epoch >= 1),
    expires_at REAL    NOT NULL
);

CREATE TABLE publication_cursor (
    offering_id        TEXT    PRIMARY KEY REFERENCES offering_head (offering_id),
    published_sequence INTEGER NOT NULL CHECK (published_sequence >= 0)
);
