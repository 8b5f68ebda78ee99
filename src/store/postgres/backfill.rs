//! Migrating a PostgreSQL database: sqlx's migrations, then the hash chain computed for history
//! recorded before it (migration 0004), then the Merkle tree of history recorded before it
//! (migration 0007), one offering at a time under its head lock.

use super::PgStore;
use crate::ledger;
use crate::store::columns::{Params, Selection, names};
use crate::store::rows::{EntryRow, NodeRow, OfferingNode, entry_columns};
use crate::store::{StoreError, migrations};

/// Parameters: one array per column of merkle_node.
static INSERT_NODES: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "INSERT INTO merkle_node ({}) SELECT * FROM UNNEST({})",
        names(NodeRow::COLUMNS, Selection::All),
        Params::postgres().arrays(NodeRow::COLUMNS, Selection::All)
    )
});

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl PgStore {
    /// Applies pending migrations, then hashes the history of every offering recorded before
    /// the hash chain, so that no entry is left unhashed once a server serves. Safe when several
    /// replicas start at once: sqlx takes an advisory lock around the migrations, and each
    /// offering is backfilled under its head lock by whichever replica gets it first.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        let unchained: Vec<String> = sqlx::query_scalar(crate::store::UNCHAINED_OFFERINGS)
            .fetch_all(&self.pool)
            .await?;
        crate::store::backfill_each(&unchained, |offering_id| self.backfill_chain(offering_id))
            .await?;
        let unbuilt: Vec<String> = sqlx::query_scalar(crate::store::UNBUILT_TREES)
            .fetch_all(&self.pool)
            .await?;
        crate::store::build_trees_each(&unbuilt, |offering_id| self.build_tree(offering_id)).await
    }

    /// Builds one offering's Merkle tree (migration 0007) in ONE transaction: lock the head,
    /// read the entry hashes in sequence order a page at a time, insert the stored nodes, then
    /// set the head's merkle_size and merkle_frontier.
    async fn build_tree(&self, offering_id: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let unbuilt: Option<bool> = sqlx::query_scalar(
            "SELECT merkle_size IS NULL FROM offering_head WHERE offering_id = $1 FOR UPDATE",
        )
        .bind(offering_id)
        .fetch_optional(&mut *tx)
        .await?;
        if unbuilt != Some(true) {
            // Another replica built it meanwhile.
            tx.rollback().await?;
            return Ok(());
        }
        let mut build = crate::store::TreeBuild::new();
        loop {
            let rows: Vec<(i64, Option<Vec<u8>>)> = sqlx::query_as(
                "SELECT sequence, entry_hash FROM history_entry \
                 WHERE offering_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3",
            )
            .bind(offering_id)
            .bind(build.after_sequence)
            .bind(crate::store::BACKFILL_PAGE_ENTRIES)
            .fetch_all(&mut *tx)
            .await?;
            if rows.is_empty() {
                break;
            }
            let nodes = build.add(offering_id, rows)?;
            let nodes = nodes
                .into_iter()
                .map(|node| {
                    NodeRow::from(&OfferingNode {
                        offering_id: offering_id.to_owned(),
                        node,
                    })
                })
                .collect();
            let insert = sqlx::query(INSERT_NODES.as_str());
            NodeRow::bind_arrays(nodes, insert, Selection::All)
                .execute(&mut *tx)
                .await?;
        }
        // The CHECK on the head refuses a size other than the version.
        sqlx::query(
            "UPDATE offering_head SET merkle_size = $2, merkle_frontier = $3 WHERE offering_id = $1",
        )
        .bind(offering_id)
        .bind(build.frontier.size() as i64)
        .bind(build.frontier.to_bytes())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Changes nothing: Ok only if the database is migrated exactly as [`PgStore::migrate`]
    /// would leave it (see `store::migrations`), for `serve --no-migrate` as the runtime role.
    pub async fn check_migrated(&self) -> Result<(), StoreError> {
        let applied: Vec<migrations::Applied> = sqlx::query_as(migrations::APPLIED_MIGRATIONS)
            .fetch_all(&self.pool)
            .await
            .map_err(migrations::unreadable)?;
        let unchained: Vec<String> = sqlx::query_scalar(crate::store::UNCHAINED_OFFERINGS)
            .fetch_all(&self.pool)
            .await?;
        let unbuilt: Vec<String> = sqlx::query_scalar(crate::store::UNBUILT_TREES)
            .fetch_all(&self.pool)
            .await?;
        migrations::check(&MIGRATOR, &applied, unchained.len() + unbuilt.len())
    }

    /// Hashes one offering's history (docs/hash-chain.md) in ONE transaction: lock the head,
    /// read the entries in sequence order a page at a time, write each entry_hash, then the
    /// head's last_hash.
    ///
    /// history_entry's append-only trigger refuses the UPDATE, so it is disabled and enabled
    /// again inside this transaction. ALTER TABLE ... DISABLE TRIGGER is transactional DDL that
    /// takes an ACCESS EXCLUSIVE lock on history_entry until COMMIT: no other session can read or
    /// write the table meanwhile, so none ever sees the trigger disabled, and a failure anywhere
    /// rolls the disabling back with the rest.
    async fn backfill_chain(&self, offering_id: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        // The head first, as every writer locks it (then history_entry): no lock-order deadlock.
        let unchained: Option<bool> = sqlx::query_scalar(
            "SELECT last_hash IS NULL FROM offering_head WHERE offering_id = $1 FOR UPDATE",
        )
        .bind(offering_id)
        .fetch_optional(&mut *tx)
        .await?;
        if unchained != Some(true) {
            // Another replica backfilled it meanwhile.
            tx.rollback().await?;
            return Ok(());
        }
        sqlx::query("ALTER TABLE history_entry DISABLE TRIGGER history_entry_no_update_delete")
            .execute(&mut *tx)
            .await?;
        let (mut previous, mut after_sequence) = (ledger::chain::GENESIS, 0);
        loop {
            let rows: Vec<EntryRow> = sqlx::query_as(concat!(
                "SELECT ",
                entry_columns!(),
                " FROM history_entry WHERE offering_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3"
            ))
            .bind(offering_id)
            .bind(after_sequence)
            .bind(crate::store::BACKFILL_PAGE_ENTRIES)
            .fetch_all(&mut *tx)
            .await?;
            let Some(last) = rows.last() else { break };
            after_sequence = last.sequence();
            let mut entries = rows
                .into_iter()
                .map(|row| row.into_entry().map(|(entry, _)| entry))
                .collect::<Result<Vec<_>, _>>()?;
            previous = ledger::chain::link_all(previous, &mut entries);
            sqlx::query(
                "UPDATE history_entry AS h SET entry_hash = v.entry_hash \
                 FROM UNNEST($2::bigint[], $3::bytea[]) AS v (sequence, entry_hash) \
                 WHERE h.offering_id = $1 AND h.sequence = v.sequence",
            )
            .bind(offering_id)
            .bind(entries.iter().map(|e| e.sequence).collect::<Vec<_>>())
            .bind(
                entries
                    .iter()
                    .map(|e| e.entry_hash.as_slice())
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("ALTER TABLE history_entry ENABLE TRIGGER history_entry_no_update_delete")
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE offering_head SET last_hash = $2 WHERE offering_id = $1")
            .bind(offering_id)
            .bind(previous.as_slice())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
