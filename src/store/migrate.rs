//! Numbered schema migrations from `migrations/`, embedded in the binary and
//! tracked with SQLite's `user_version`.

use rusqlite::Connection;

use super::StoreError;

/// (version, SQL) in order. A new file in `migrations/` gets the next number here.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/0001_init.sql")),
    (2, include_str!("../../migrations/0002_goals.sql")),
    (3, include_str!("../../migrations/0003_rollups.sql")),
    (4, include_str!("../../migrations/0004_rollup_sketches.sql")),
    (5, include_str!("../../migrations/0005_users.sql")),
    (6, include_str!("../../migrations/0006_summaries.sql")),
    (
        7,
        include_str!("../../migrations/0007_imported_rollups.sql"),
    ),
    (
        8,
        include_str!("../../migrations/0008_weekly_summary_pref.sql"),
    ),
    (
        10,
        include_str!("../../migrations/0010_rollup_rebuilds.sql"),
    ),
];

/// The schema version this binary writes.
pub fn latest() -> i64 {
    MIGRATIONS.last().map(|m| m.0).unwrap_or(0)
}

/// Applies every migration newer than the database, each in its own
/// transaction, and refuses a database written by a newer binary.
pub fn run(conn: &mut Connection) -> Result<(), StoreError> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > latest() {
        return Err(StoreError::TooNew {
            found: current,
            supported: latest(),
        });
    }
    for &(version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)
            .and_then(|_| tx.pragma_update(None, "user_version", version))
            .map_err(|source| StoreError::Migration { version, source })?;
        tx.commit()?;
        tracing::info!(version, "applied schema migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Every file in `migrations/` is applied, in the order of its number.
    #[test]
    fn every_migration_file_is_registered() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        assert_eq!(files.len(), super::MIGRATIONS.len(), "{files:?}");
        for (i, (file, (version, sql))) in files.iter().zip(super::MIGRATIONS).enumerate() {
            assert_eq!(*version, i as i64 + 1);
            assert!(file.starts_with(&format!("{:04}_", version)), "{file}");
            let text = std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("migrations")
                    .join(file),
            )
            .unwrap();
            assert_eq!(&text, sql, "{file} is not the one registered as {version}");
        }
    }
}
