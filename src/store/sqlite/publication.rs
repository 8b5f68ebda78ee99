//! The publisher's lease and cursors on SQLite (see store::publication and
//! migrations/postgres/0006_publication.sql). Writes take the store's writer turn like every
//! other write; times are the database's clock in milliseconds since the Unix epoch.

use sqlx::Connection;

use super::SqliteStore;
use crate::ledger::Timestamp;
use crate::store::{Backlog, Lease, StartAt, StoreError};

/// Now, in milliseconds since the Unix epoch (julianday counts days from noon, 4714 BC).
macro_rules! now_ms {
    () => {
        "((julianday('now') - 2440587.5) * 86400000.0)"
    };
}

const TAKE_LEASE: &str = concat!(
    "INSERT INTO publication_lease (name, holder, epoch, expires_at) VALUES (?1, ?2, 1, ",
    now_ms!(),
    " + ?3) ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
     epoch = publication_lease.epoch + 1, expires_at = excluded.expires_at \
     WHERE publication_lease.expires_at < ",
    now_ms!(),
    " RETURNING epoch"
);

const CURSORS_AT_HEADS: &str = "INSERT INTO publication_cursor (offering_id, published_sequence) \
     SELECT offering_id, version FROM offering_head WHERE true ON CONFLICT (offering_id) DO NOTHING";

const RENEW_LEASE: &str = concat!(
    "UPDATE publication_lease SET expires_at = ",
    now_ms!(),
    " + ?3 WHERE name = ?1 AND epoch = ?2"
);

const RELEASE_LEASE: &str =
    "UPDATE publication_lease SET expires_at = 0 WHERE name = ?1 AND epoch = ?2";

const BACKLOG: &str = "SELECT h.offering_id, h.version, COALESCE(c.published_sequence, 0), \
     (SELECT e.record_time FROM history_entry e WHERE e.offering_id = h.offering_id \
      AND e.sequence = COALESCE(c.published_sequence, 0) + 1) \
     FROM offering_head h LEFT JOIN publication_cursor c ON c.offering_id = h.offering_id \
     WHERE h.version > COALESCE(c.published_sequence, 0) AND (?1 IS NULL OR h.offering_id > ?1) \
     ORDER BY h.offering_id LIMIT ?2";

/// The lease is checked in the statement that writes, under SQLite's one write lock.
const ADVANCE_CURSOR: &str = "INSERT INTO publication_cursor (offering_id, published_sequence) \
     SELECT ?3, ?4 FROM publication_lease WHERE name = ?1 AND epoch = ?2 \
     ON CONFLICT (offering_id) DO UPDATE SET published_sequence = excluded.published_sequence \
     WHERE publication_cursor.published_sequence < excluded.published_sequence";

fn ttl_ms(lease: &Lease<'_>) -> f64 {
    lease.ttl.as_secs_f64() * 1000.0
}

impl SqliteStore {
    pub(super) async fn take_lease(
        &self,
        lease: &Lease<'_>,
        start: StartAt,
    ) -> Result<Option<i64>, StoreError> {
        let _writer = self.writer.lock().await;
        let mut connection = self.pool.acquire().await?;
        let mut tx = connection.begin_with("BEGIN IMMEDIATE").await?;
        let epoch: Option<i64> = sqlx::query_scalar(TAKE_LEASE)
            .bind(lease.name)
            .bind(lease.holder)
            .bind(ttl_ms(lease))
            .fetch_optional(&mut *tx)
            .await?;
        if epoch == Some(1) && start == StartAt::Heads {
            sqlx::query(CURSORS_AT_HEADS).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(epoch)
    }

    pub(super) async fn renew_lease(
        &self,
        lease: &Lease<'_>,
        epoch: i64,
    ) -> Result<bool, StoreError> {
        let _writer = self.writer.lock().await;
        let done = sqlx::query(RENEW_LEASE)
            .bind(lease.name)
            .bind(epoch)
            .bind(ttl_ms(lease))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn release_lease(&self, name: &str, epoch: i64) -> Result<(), StoreError> {
        let _writer = self.writer.lock().await;
        sqlx::query(RELEASE_LEASE)
            .bind(name)
            .bind(epoch)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(super) async fn backlog(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Backlog>, StoreError> {
        let rows: Vec<(String, i64, i64, Option<Timestamp>)> = sqlx::query_as(BACKLOG)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |(offering_id, head_version, published_sequence, oldest_unpublished)| Backlog {
                    offering_id,
                    head_version,
                    published_sequence,
                    oldest_unpublished,
                },
            )
            .collect())
    }

    pub(super) async fn advance_cursor(
        &self,
        name: &str,
        epoch: i64,
        offering_id: &str,
        sequence: i64,
    ) -> Result<bool, StoreError> {
        let _writer = self.writer.lock().await;
        let done = sqlx::query(ADVANCE_CURSOR)
            .bind(name)
            .bind(epoch)
            .bind(offering_id)
            .bind(sequence)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
