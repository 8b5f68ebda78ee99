//! `serve --no-migrate`: the check that a database is migrated exactly as this binary would
//! migrate it, for a runtime role that may not migrate.
//!
//! sqlx's migrator sends `CREATE TABLE IF NOT EXISTS _sqlx_migrations` even when the table
//! exists, which PostgreSQL 15 refuses without CREATE on the schema; a least-privilege role
//! therefore cannot even find out through it that nothing is to be done. This check only reads:
//! the applied migrations must be the binary's own, every one successful with the same
//! checksum, and no offering may wait for a backfill that only the owner may write: the hash
//! chain's (migration 0004) or the Merkle tree's (0007).

use sqlx::migrate::Migrator;

use super::StoreError;

/// What sqlx recorded of each applied migration (its own bookkeeping table, same on both
/// backends).
pub(crate) const APPLIED_MIGRATIONS: &str =
    "SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version";

/// One row of [`APPLIED_MIGRATIONS`].
pub(crate) type Applied = (i64, Vec<u8>, bool);

/// Ok only if `applied` is exactly `binary`'s migrations and no offering waits for a backfill;
/// otherwise says what differs, for [`StoreError::NotMigrated`].
pub(crate) fn check(
    binary: &Migrator,
    applied: &[Applied],
    waiting_for_backfill: usize,
) -> Result<(), StoreError> {
    let not_migrated = |why: String| Err(StoreError::NotMigrated(why));
    if let Some((version, _, _)) = applied.iter().find(|(_, _, success)| !success) {
        return not_migrated(format!("migration {version} was left half applied"));
    }
    let expected: Vec<(i64, &[u8])> = binary
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| (m.version, m.checksum.as_ref()))
        .collect();
    for (version, checksum) in &expected {
        match applied.iter().find(|(v, _, _)| v == version) {
            None => return not_migrated(format!("migration {version} is not applied")),
            Some((_, applied_checksum, _)) if applied_checksum != checksum => {
                return not_migrated(format!(
                    "migration {version} was applied from a different file than this binary's"
                ));
            }
            Some(_) => {}
        }
    }
    if let Some((version, _, _)) = applied
        .iter()
        .find(|(v, _, _)| !expected.iter().any(|(e, _)| e == v))
    {
        return not_migrated(format!(
            "migration {version} is applied but unknown to this binary (a newer release migrated it)"
        ));
    }
    if waiting_for_backfill > 0 {
        return not_migrated(format!(
            "{waiting_for_backfill} offerings wait for migrate's backfill (hash chain or Merkle tree)"
        ));
    }
    Ok(())
}

/// The error of reading [`APPLIED_MIGRATIONS`]: most often a database never migrated.
pub(crate) fn unreadable(error: sqlx::Error) -> StoreError {
    StoreError::NotMigrated(format!("cannot read _sqlx_migrations ({error})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

    fn applied_as_migrated() -> Vec<Applied> {
        MIGRATOR
            .iter()
            .map(|m| (m.version, m.checksum.to_vec(), true))
            .collect()
    }

    fn refusal(applied: &[Applied], unchained: usize) -> String {
        match check(&MIGRATOR, applied, unchained) {
            Err(StoreError::NotMigrated(why)) => why,
            other => panic!("expected NotMigrated, got {other:?}"),
        }
    }

    #[test]
    fn the_binarys_own_migrations_pass() {
        check(&MIGRATOR, &applied_as_migrated(), 0).expect("migrated");
    }

    #[test]
    fn a_missing_a_foreign_a_changed_or_a_failed_migration_is_refused() {
        assert!(refusal(&[], 0).contains("is not applied"));
        let mut older = applied_as_migrated();
        older.pop();
        assert!(refusal(&older, 0).contains("is not applied"));
        let mut newer = applied_as_migrated();
        newer.push((99_999_999, vec![0; 48], true));
        assert!(refusal(&newer, 0).contains("unknown to this binary"));
        let mut changed = applied_as_migrated();
        changed[0].1[0] ^= 1;
        assert!(refusal(&changed, 0).contains("different file"));
        let mut failed = applied_as_migrated();
        failed.last_mut().expect("a migration").2 = false;
        assert!(refusal(&failed, 0).contains("half applied"));
    }

    #[test]
    fn offerings_waiting_for_the_backfill_are_refused() {
        assert!(refusal(&applied_as_migrated(), 2).contains("2 offerings"));
    }
}
