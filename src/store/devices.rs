//! Device tokens: browsers that signed in to an account. The sign-in
//! limiter (`crate::auth::limiter`) lets an attempt showing one for its
//! account skip the per-account limits, so the owner's browsers get in
//! while strangers guess from elsewhere.
//!
//! Stored rather than made stateless (a MAC of the user id and issue time
//! under a server key) so that each is bounded per user, ends with its
//! user, and can be revoked on its own; only the hash of the cookie's
//! random token is kept, as for login sessions.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;

/// A device token is valid this long after its last sign-in.
pub const DEVICE_SECS: i64 = 180 * 86_400;
/// Tokens kept per user, newest sign-ins first: a few browsers each for
/// home, office and phone. A sign-in from an eleventh browser retires the
/// one unused longest, so the rows stay bounded by the users.
pub const DEVICES_PER_USER: i64 = 10;

/// Stores a new device token of `user_id` and retires expired ones and
/// those past [`DEVICES_PER_USER`].
pub fn add_device(
    conn: &Connection,
    token_hash: &[u8],
    user_id: i64,
    now: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO device_tokens (token_hash, user_id, created_at, last_used_at)
         VALUES (?1, ?2, ?3, ?3)",
        params![token_hash, user_id, now],
    )?;
    conn.execute(
        "DELETE FROM device_tokens WHERE user_id = ?1 AND (last_used_at <= ?2
            OR token_hash NOT IN (SELECT token_hash FROM device_tokens WHERE user_id = ?1
                                   ORDER BY last_used_at DESC, created_at DESC LIMIT ?3))",
        params![user_id, now - DEVICE_SECS, DEVICES_PER_USER],
    )?;
    Ok(())
}

/// The user whose valid device token hashes to `token_hash`, if any.
pub fn device_user(
    conn: &Connection,
    token_hash: &[u8],
    now: i64,
) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT user_id FROM device_tokens WHERE token_hash = ?1 AND last_used_at > ?2",
            params![token_hash, now - DEVICE_SECS],
            |r| r.get(0),
        )
        .optional()?)
}

/// Records a sign-in with the device token: it stays valid
/// [`DEVICE_SECS`] from now.
pub fn touch_device(conn: &Connection, token_hash: &[u8], now: i64) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE device_tokens SET last_used_at = max(last_used_at, ?2) WHERE token_hash = ?1",
        params![token_hash, now],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::users;

    fn db(dir: &std::path::Path) -> Connection {
        let mut conn = Connection::open(dir.join("tally.db")).unwrap();
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        super::super::migrate::run(&mut conn).unwrap();
        conn
    }

    #[test]
    fn device_tokens_are_bounded_expire_and_end_with_their_user() {
        let dir = tempfile::tempdir().unwrap();
        let conn = db(dir.path());
        let root = users::add_user(&conn, "root@example.com", "x", true, 0).unwrap();
        let bob = users::add_user(&conn, "bob@example.com", "x", false, 0).unwrap();
        add_device(&conn, b"root", root.id, 0).unwrap();
        for i in 0..DEVICES_PER_USER + 2 {
            add_device(&conn, format!("bob{i}").as_bytes(), bob.id, i).unwrap();
        }
        // The two oldest of Bob's went; the newest ten stay.
        assert_eq!(device_user(&conn, b"bob0", 20).unwrap(), None);
        assert_eq!(device_user(&conn, b"bob1", 20).unwrap(), None);
        assert_eq!(device_user(&conn, b"bob2", 20).unwrap(), Some(bob.id));
        assert_eq!(device_user(&conn, b"root", 20).unwrap(), Some(root.id));
        // A token is valid for DEVICE_SECS after its last sign-in.
        touch_device(&conn, b"bob2", 100).unwrap();
        assert_eq!(device_user(&conn, b"bob3", DEVICE_SECS + 3).unwrap(), None);
        assert_eq!(
            device_user(&conn, b"bob2", DEVICE_SECS + 99).unwrap(),
            Some(bob.id)
        );
        // Removing Bob ends his tokens, and only his.
        users::remove_user(&conn, "bob@example.com").unwrap();
        let left: i64 = conn
            .query_row("SELECT count(*) FROM device_tokens", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 1);
        // Without foreign keys on, the explicit delete still ends them.
        let conn = Connection::open(dir.path().join("tally.db")).unwrap();
        conn.pragma_update(None, "foreign_keys", false).unwrap();
        let carol = users::add_user(&conn, "carol@example.com", "x", false, 0).unwrap();
        add_device(&conn, b"carol", carol.id, 0).unwrap();
        users::remove_user(&conn, "carol@example.com").unwrap();
        assert_eq!(device_user(&conn, b"carol", 1).unwrap(), None);
    }
}
