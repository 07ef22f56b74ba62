//! Numbered schema migrations from `migrations/`, embedded in the binary and
//! tracked with SQLite's `user_version`.

use rusqlite::Connection;
use rusqlite::functions::FunctionFlags;

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
        9,
        include_str!("../../migrations/0009_roles_hashed_share_links.sql"),
    ),
    (
        10,
        include_str!("../../migrations/0010_rollup_rebuilds.sql"),
    ),
    (11, include_str!("../../migrations/0011_device_tokens.sql")),
    (12, include_str!("../../migrations/0012_removed_sites.sql")),
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
    if current == latest() {
        return Ok(());
    }
    // Migrations may drop secrets kept in the clear before (share tokens
    // until 9): deleted rows are overwritten with zeros rather than left in
    // free pages of the file.
    conn.pragma_update(None, "secure_delete", true)?;
    conn.create_scalar_function(
        "tally_token_hash",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| Ok(crate::auth::token_hash(&ctx.get::<String>(0)?)),
    )?;
    let applied = apply(conn, current);
    conn.remove_function("tally_token_hash", 1)?;
    conn.pragma_update(None, "secure_delete", false)?;
    applied?;
    if current == 0 {
        // A new database: the migrations that ask for a rollup rebuild (3
        // and 4) ask it of rows a new database does not have. Left, the
        // request would rebuild whatever the CLI writes before the first
        // start (sites, an import) in the background of that start.
        conn.execute("DELETE FROM meta WHERE key = 'rollups_rebuild'", [])?;
    }
    // The replaced pages stay in the main file until a checkpoint copies
    // the new ones over them. A reader of another process may hold it back;
    // then the next checkpoint of the server finishes the job.
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
        tracing::debug!(error = %e, "checkpoint after migrations");
    }
    Ok(())
}

fn apply(conn: &mut Connection, current: i64) -> Result<(), StoreError> {
    for &(version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)
            .and_then(|_| tx.pragma_update(None, "user_version", version))
            .map_err(|source| StoreError::Migration { version, source })?;
        check(&tx, version)?;
        tx.commit()?;
        tracing::info!(version, "applied schema migration");
    }
    Ok(())
}

/// What a migration must have left, where its SQL alone cannot say so.
/// An error rolls the migration back.
fn check(conn: &Connection, version: i64) -> Result<(), StoreError> {
    if version == 12 {
        // 12 edits the stored definitions by text: a definition written
        // otherwise (by hand, by another tool) would keep its cascade, and a
        // site's removal would delete all its rows in one transaction.
        for table in ["events", "visits", "imported_rollups"] {
            let keys: i64 = conn.query_row(
                "SELECT COUNT(*) FROM pragma_foreign_key_list(?1)",
                [table],
                |r| r.get(0),
            )?;
            if keys > 0 {
                return Err(StoreError::MigrationCheck {
                    version,
                    detail: format!(
                        "table {table} still has a foreign key to sites; its definition \
                         differs from the one this version wrote (see `.schema {table}`)"
                    ),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    /// A schema-8 database's share tokens become their hashes (the same
    /// `auth::token_hash` checks), and its members owners.
    #[test]
    fn version_9_hashes_share_tokens_and_makes_members_owners() {
        let mut conn = Connection::open_in_memory().unwrap();
        for (_, sql) in &super::MIGRATIONS[..8] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 8).unwrap();
        let token = "ab".repeat(32);
        conn.execute_batch(&format!(
            "INSERT INTO sites (id, domain, timezone, public, created_at) VALUES (1, 'a.example', 'UTC', 0, 0);
             INSERT INTO users (id, email, password_hash, admin, created_at) VALUES (1, 'a@example.com', 'x', 0, 0);
             INSERT INTO site_members (site_id, user_id) VALUES (1, 1);
             INSERT INTO share_links (site_id, name, token, created_at) VALUES (1, 'Wiki', '{token}', 5);"
        ))
        .unwrap();
        super::run(&mut conn).unwrap();
        let (hash, hint, name): (Vec<u8>, String, String) = conn
            .query_row("SELECT token_hash, hint, name FROM share_links", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!(hash, crate::auth::token_hash(&token));
        assert_eq!((hint.as_str(), name.as_str()), ("abab", "Wiki"));
        let role: String = conn
            .query_row("SELECT role FROM site_members", [], |r| r.get(0))
            .unwrap();
        assert_eq!(role, "owner");
        // The function served the conversion only.
        assert!(conn.execute_batch("SELECT tally_token_hash('x')").is_err());
    }

    /// Migration 12 drops the cascades of the bulky tables by editing their
    /// stored definitions: a migrated database has no foreign keys on them,
    /// and a definition the edit does not match fails the migration with a
    /// clear error and changes nothing.
    #[test]
    fn version_12_leaves_no_foreign_keys_on_the_bulky_tables() {
        let fks = |conn: &Connection, table: &str| -> i64 {
            conn.query_row(
                "SELECT COUNT(*) FROM pragma_foreign_key_list(?1)",
                [table],
                |r| r.get(0),
            )
            .unwrap()
        };
        let mut conn = Connection::open_in_memory().unwrap();
        super::run(&mut conn).unwrap();
        for table in ["events", "visits", "imported_rollups"] {
            assert_eq!(fks(&conn, table), 0, "{table}");
        }

        // Written otherwise than the edit expects (here: another space).
        let mut conn = Connection::open_in_memory().unwrap();
        // Migration 9 hashes share tokens with a function `run` provides.
        conn.create_scalar_function("tally_token_hash", 1, Default::default(), |_| Ok(""))
            .unwrap();
        for (_, sql) in &super::MIGRATIONS[..11] {
            conn.execute_batch(sql).unwrap();
        }
        conn.remove_function("tally_token_hash", 1).unwrap();
        conn.pragma_update(None, "user_version", 11).unwrap();
        conn.execute_batch(
            "PRAGMA writable_schema = ON;
             UPDATE sqlite_schema
                SET sql = replace(sql, 'REFERENCES sites(id)', 'REFERENCES sites (id)')
              WHERE name = 'visits';
             PRAGMA writable_schema = RESET;",
        )
        .unwrap();
        assert_eq!(fks(&conn, "visits"), 1);
        let err = super::run(&mut conn).unwrap_err().to_string();
        assert!(
            err.contains("migration 12") && err.contains("visits"),
            "{err}"
        );
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 11);
        assert_eq!(fks(&conn, "visits"), 1);
    }

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
