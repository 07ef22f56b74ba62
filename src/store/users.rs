//! Dashboard users, login sessions, site membership (with roles) and share
//! links.
//!
//! Only stored forms arrive here: a password's PHC string, a session or
//! share token's hash. Hashing and checking them is `crate::auth`'s
//! business; what each role may do is the dashboard's (`http::pages::access`).

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, ToSql, params};

use super::StoreError;
use super::sites::Site;

#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: i64,
    pub email: String,
    /// Sees and manages every site.
    pub admin: bool,
}

fn user_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        email: r.get(1)?,
        admin: r.get(2)?,
    })
}

pub fn count_users(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0))?)
}

pub fn add_user(
    conn: &Connection,
    email: &str,
    password_hash: &str,
    admin: bool,
    now: i64,
) -> Result<User, StoreError> {
    let inserted = conn.execute(
        "INSERT INTO users (email, password_hash, admin, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (email) DO NOTHING",
        params![email, password_hash, admin, now],
    )?;
    if inserted == 0 {
        return Err(StoreError::UserExists(email.to_string()));
    }
    Ok(User {
        id: conn.last_insert_rowid(),
        email: email.to_string(),
        admin,
    })
}

/// Every user's email and whether they are an admin.
pub fn list_users(conn: &Connection) -> Result<Vec<(String, bool)>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT email, admin FROM users ORDER BY email")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A user as the admins' users page shows them.
#[derive(Debug, Clone, PartialEq)]
pub struct UserSites {
    pub email: String,
    pub admin: bool,
    /// The sites they are a member of, by domain, with their role there
    /// (an admin sees every site whatever this holds).
    pub sites: Vec<(String, Role)>,
}

/// Every user with their memberships, by email: two queries, whatever the
/// number of users.
pub fn users_with_sites(conn: &Connection) -> Result<Vec<UserSites>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT id, email, admin FROM users ORDER BY email")?;
    let mut users: Vec<(i64, UserSites)> = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                UserSites {
                    email: r.get(1)?,
                    admin: r.get(2)?,
                    sites: Vec::new(),
                },
            ))
        })?
        .collect::<Result<_, _>>()?;
    let at: std::collections::HashMap<i64, usize> = users
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (*id, i))
        .collect();
    let mut stmt = conn.prepare_cached(
        "SELECT m.user_id, s.domain, m.role FROM site_members m JOIN sites s ON s.id = m.site_id
          ORDER BY s.domain",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?)))?;
    for row in rows {
        let (user_id, domain, role) = row?;
        if let Some(&i) = at.get(&user_id) {
            users[i].1.sites.push((domain, role));
        }
    }
    Ok(users.into_iter().map(|(_, u)| u).collect())
}

/// The user with `email` (any case) and their password's PHC string.
pub fn find_user(conn: &Connection, email: &str) -> Result<Option<(User, String)>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT id, email, admin, password_hash FROM users WHERE email = ?1")?
        .query_row([email], |r| Ok((user_from_row(r)?, r.get(3)?)))
        .optional()?)
}

/// Replaces a password and ends every session of the user.
pub fn set_password(conn: &Connection, email: &str, password_hash: &str) -> Result<(), StoreError> {
    let Some((user, _)) = find_user(conn, email)? else {
        return Err(StoreError::NoSuchUser(email.to_string()));
    };
    conn.execute(
        "UPDATE users SET password_hash = ?2 WHERE id = ?1",
        params![user.id, password_hash],
    )?;
    conn.execute("DELETE FROM login_sessions WHERE user_id = ?1", [user.id])?;
    Ok(())
}

/// A member's role at one site, from least to most rights (so roles
/// compare: `Owner > Editor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Viewer,
    Editor,
    Owner,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Editor, Role::Owner];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Owner => "owner",
        }
    }

    /// The role named `s` (any case, trimmed).
    pub fn parse(s: &str) -> Option<Role> {
        let s = s.trim();
        Role::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ToSql for Role {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for Role {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        Role::parse(value.as_str()?).ok_or(FromSqlError::InvalidType)
    }
}

/// Makes `user_id` a member of `site_id` with `role`; false when they
/// already are one (their role is left as it is).
pub fn grant(
    conn: &Connection,
    site_id: i64,
    user_id: i64,
    role: Role,
) -> Result<bool, StoreError> {
    let added = conn.execute(
        "INSERT INTO site_members (site_id, user_id, role) VALUES (?1, ?2, ?3)
         ON CONFLICT DO NOTHING",
        params![site_id, user_id, role],
    )?;
    Ok(added == 1)
}

/// The role of `user_id` at `site_id`, if a member (admins need none).
pub fn role_of(conn: &Connection, site_id: i64, user_id: i64) -> Result<Option<Role>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT role FROM site_members WHERE site_id = ?1 AND user_id = ?2")?
        .query_row(params![site_id, user_id], |r| r.get(0))
        .optional()?)
}

/// A member of a site, for its settings page.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub user_id: i64,
    pub email: String,
    pub role: Role,
}

/// The members of `site_id`, by email.
pub fn members(conn: &Connection, site_id: i64) -> Result<Vec<Member>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT u.id, u.email, m.role FROM site_members m JOIN users u ON u.id = m.user_id
          WHERE m.site_id = ?1 ORDER BY u.email",
    )?;
    let rows = stmt.query_map([site_id], |r| {
        Ok(Member {
            user_id: r.get(0)?,
            email: r.get(1)?,
            role: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// What became of a change to a membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange {
    Done,
    NotAMember,
    /// Refused: the site would be left without an owner.
    LastOwner,
}

/// Whether taking the owner role from `user_id` would leave `site_id`
/// without one.
fn is_last_owner(conn: &Connection, site_id: i64, user_id: i64) -> Result<bool, StoreError> {
    let others: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM site_members WHERE site_id = ?1 AND user_id <> ?2 AND role = 'owner'",
        )?
        .query_row(params![site_id, user_id], |r| r.get(0))?;
    Ok(others == 0)
}

/// Gives a member another role. With `keep_an_owner`, the last owner
/// keeps theirs (only an admin may leave a site without an owner).
pub fn set_role(
    conn: &Connection,
    site_id: i64,
    user_id: i64,
    role: Role,
    keep_an_owner: bool,
) -> Result<MemberChange, StoreError> {
    let Some(current) = role_of(conn, site_id, user_id)? else {
        return Ok(MemberChange::NotAMember);
    };
    if keep_an_owner
        && current == Role::Owner
        && role != Role::Owner
        && is_last_owner(conn, site_id, user_id)?
    {
        return Ok(MemberChange::LastOwner);
    }
    conn.execute(
        "UPDATE site_members SET role = ?3 WHERE site_id = ?1 AND user_id = ?2",
        params![site_id, user_id, role],
    )?;
    Ok(MemberChange::Done)
}

/// Ends a membership: the user's next request no longer sees the site.
/// With `keep_an_owner`, as for [`set_role`].
pub fn remove_member(
    conn: &Connection,
    site_id: i64,
    user_id: i64,
    keep_an_owner: bool,
) -> Result<MemberChange, StoreError> {
    let Some(current) = role_of(conn, site_id, user_id)? else {
        return Ok(MemberChange::NotAMember);
    };
    if keep_an_owner && current == Role::Owner && is_last_owner(conn, site_id, user_id)? {
        return Ok(MemberChange::LastOwner);
    }
    conn.execute(
        "DELETE FROM site_members WHERE site_id = ?1 AND user_id = ?2",
        params![site_id, user_id],
    )?;
    Ok(MemberChange::Done)
}

/// What became of removing a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRemoval {
    /// Gone with their memberships and sessions; the domains of the sites
    /// they were the last owner of (admins manage those now).
    Removed { ownerless: Vec<String> },
    /// Refused: nobody would be left to manage users and every site.
    LastAdmin,
}

/// Deletes the user with `email`, their memberships, their login sessions
/// (so a cookie they hold opens nothing any more) and device tokens. The last admin
/// stays.
///
/// One transaction that takes the write lock before it reads: the count of
/// admins and the deletes it allows must see the same database, or two
/// removals at once (two `tally user remove` runs, each with its own
/// connection) could each count two admins and delete both.
pub fn remove_user(conn: &Connection, email: &str) -> Result<UserRemoval, StoreError> {
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    let removal = remove_user_within(&tx, email)?;
    tx.commit()?;
    Ok(removal)
}

/// [`remove_user`] inside the caller's transaction (a writer job, which
/// already holds the write lock).
pub fn remove_user_within(conn: &Connection, email: &str) -> Result<UserRemoval, StoreError> {
    let Some((user, _)) = find_user(conn, email)? else {
        return Err(StoreError::NoSuchUser(email.to_string()));
    };
    if user.admin {
        let admins: i64 =
            conn.query_row("SELECT count(*) FROM users WHERE admin = 1", [], |r| {
                r.get(0)
            })?;
        if admins <= 1 {
            return Ok(UserRemoval::LastAdmin);
        }
    }
    let ownerless = {
        let mut stmt = conn.prepare_cached(
            "SELECT s.domain FROM site_members m JOIN sites s ON s.id = m.site_id
              WHERE m.user_id = ?1 AND m.role = 'owner'
                AND NOT EXISTS (SELECT 1 FROM site_members o WHERE o.site_id = m.site_id
                                   AND o.user_id <> m.user_id AND o.role = 'owner')
              ORDER BY s.domain",
        )?;
        let rows = stmt.query_map([user.id], |r| r.get(0))?;
        rows.collect::<Result<Vec<String>, _>>()?
    };
    // The foreign keys cascade too; deleted here outright so that nothing
    // depends on the connection having them on.
    conn.execute("DELETE FROM login_sessions WHERE user_id = ?1", [user.id])?;
    conn.execute("DELETE FROM device_tokens WHERE user_id = ?1", [user.id])?;
    conn.execute("DELETE FROM site_members WHERE user_id = ?1", [user.id])?;
    conn.execute("DELETE FROM users WHERE id = ?1", [user.id])?;
    Ok(UserRemoval::Removed { ownerless })
}

/// The sites `user` sees, by domain.
pub fn sites_of(conn: &Connection, user: &User) -> Result<Vec<Site>, StoreError> {
    if user.admin {
        return super::sites::list_sites(conn);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT s.id, s.domain, s.timezone, s.public, s.created_at
           FROM sites s JOIN site_members m ON m.site_id = s.id
          WHERE m.user_id = ?1 ORDER BY s.domain",
    )?;
    let rows = stmt.query_map([user.id], super::sites::site_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The e-mail addresses of everyone who sees `site_id` (admins and
/// members) and wants the weekly summary.
pub fn summary_recipients(conn: &Connection, site_id: i64) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT email FROM users WHERE admin = 1 AND weekly_summary = 1
         UNION SELECT u.email FROM users u JOIN site_members m ON m.user_id = u.id
          WHERE m.site_id = ?1 AND u.weekly_summary = 1
         ORDER BY 1",
    )?;
    let rows = stmt.query_map([site_id], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Whether the user wants the weekly summaries by e-mail.
pub fn wants_weekly_summary(conn: &Connection, user_id: i64) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT weekly_summary FROM users WHERE id = ?1")?
        .query_row([user_id], |r| r.get(0))
        .optional()?
        .unwrap_or(false))
}

pub fn set_weekly_summary(conn: &Connection, user_id: i64, on: bool) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE users SET weekly_summary = ?2 WHERE id = ?1")?
        .execute(params![user_id, on])?;
    Ok(())
}

/// Whether `user` sees `site_id`: an admin, or a member in any role.
pub fn can_view(conn: &Connection, user: &User, site_id: i64) -> Result<bool, StoreError> {
    Ok(user.admin || role_of(conn, site_id, user.id)?.is_some())
}

/// A live login session: its user and the CSRF token its forms carry.
#[derive(Debug, Clone)]
pub struct LoginSession {
    pub user: User,
    pub csrf_token: String,
    pub created_at: i64,
    /// When it ends unless used: at most the idle time after its last use
    /// (moved by [`touch_session`]), never past the limit from sign-in.
    pub expires_at: i64,
}

pub fn create_session(
    conn: &Connection,
    token_hash: &[u8],
    user_id: i64,
    csrf_token: &str,
    now: i64,
    expires_at: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO login_sessions (token_hash, user_id, csrf_token, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![token_hash, user_id, csrf_token, now, expires_at],
    )?;
    Ok(())
}

/// The session with `token_hash`, if still open at `now`: not expired, not
/// older than `max_secs`, and not expiring further out than `idle_secs`
/// (such an expiry was set under a longer idle time than today's, so the
/// last use it stands for is not known).
pub fn find_session(
    conn: &Connection,
    token_hash: &[u8],
    now: i64,
    idle_secs: i64,
    max_secs: i64,
) -> Result<Option<LoginSession>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT u.id, u.email, u.admin, s.csrf_token, s.created_at, s.expires_at
               FROM login_sessions s JOIN users u ON u.id = s.user_id
              WHERE s.token_hash = ?1 AND s.expires_at > ?2 AND s.expires_at <= ?2 + ?3
                AND s.created_at > ?2 - ?4",
        )?
        .query_row(params![token_hash, now, idle_secs, max_secs], |r| {
            Ok(LoginSession {
                user: user_from_row(r)?,
                csrf_token: r.get(3)?,
                created_at: r.get(4)?,
                expires_at: r.get(5)?,
            })
        })
        .optional()?)
}

/// Moves a session's expiry later to `expires_at` (never earlier, so
/// racing requests cannot shorten it).
pub fn touch_session(
    conn: &Connection,
    token_hash: &[u8],
    expires_at: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE login_sessions SET expires_at = ?2 WHERE token_hash = ?1 AND expires_at < ?2",
    )?
    .execute(params![token_hash, expires_at])?;
    Ok(())
}

pub fn delete_session(conn: &Connection, token_hash: &[u8]) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM login_sessions WHERE token_hash = ?1",
        [token_hash],
    )?;
    Ok(())
}

/// Removes expired sessions; returns how many.
pub fn delete_expired_sessions(conn: &Connection, now: i64) -> Result<usize, StoreError> {
    Ok(conn.execute("DELETE FROM login_sessions WHERE expires_at <= ?1", [now])?)
}

/// A share link as stored: its token is not, only a hash of it.
#[derive(Debug, Clone, PartialEq)]
pub struct ShareLink {
    pub id: i64,
    pub name: String,
    /// The token's first characters, to tell links apart; not a secret.
    pub hint: String,
}

/// Characters of a share token kept as its hint (of 64 random hex digits).
pub const SHARE_HINT_CHARS: usize = 4;

pub fn add_share_link(
    conn: &Connection,
    site_id: i64,
    name: &str,
    token_hash: &[u8],
    hint: &str,
    now: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO share_links (site_id, name, token_hash, hint, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![site_id, name, token_hash, hint, now],
    )?;
    Ok(())
}

pub fn share_links(conn: &Connection, site_id: i64) -> Result<Vec<ShareLink>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT id, name, hint FROM share_links WHERE site_id = ?1 ORDER BY id")?;
    let rows = stmt.query_map([site_id], |r| {
        Ok(ShareLink {
            id: r.get(0)?,
            name: r.get(1)?,
            hint: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Whether the token with `token_hash` is a live share link of `site_id`
/// (found through the unique index on the hash).
pub fn share_link_valid(
    conn: &Connection,
    site_id: i64,
    token_hash: &[u8],
) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT site_id FROM share_links WHERE token_hash = ?1")?
        .query_row([token_hash], |r| r.get::<_, i64>(0))
        .optional()?
        == Some(site_id))
}

pub fn delete_share_link(conn: &Connection, site_id: i64, id: i64) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM share_links WHERE site_id = ?1 AND id = ?2",
        params![site_id, id],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        super::super::migrate::run(&mut conn).unwrap();
        conn
    }

    #[test]
    fn members_see_only_their_sites() {
        let conn = db();
        let a = super::super::sites::add_site(&conn, "a.example", "UTC", false).unwrap();
        let b = super::super::sites::add_site(&conn, "b.example", "UTC", false).unwrap();
        let admin = add_user(&conn, "root@example.com", "x", true, 0).unwrap();
        let member = add_user(&conn, "Ann@example.com", "x", false, 0).unwrap();
        grant(&conn, b.id, member.id, Role::Viewer).unwrap();
        assert_eq!(sites_of(&conn, &admin).unwrap().len(), 2);
        let seen: Vec<String> = sites_of(&conn, &member)
            .unwrap()
            .into_iter()
            .map(|s| s.domain)
            .collect();
        assert_eq!(seen, ["b.example"]);
        assert!(!can_view(&conn, &member, a.id).unwrap());
        assert!(can_view(&conn, &member, b.id).unwrap());
        // Emails compare without case; the same address cannot join twice.
        assert!(find_user(&conn, "ann@EXAMPLE.com").unwrap().is_some());
        assert!(matches!(
            add_user(&conn, "ann@example.com", "y", false, 0),
            Err(StoreError::UserExists(_))
        ));
    }

    #[test]
    fn a_site_keeps_an_owner_and_the_server_an_admin() {
        let conn = db();
        let site = super::super::sites::add_site(&conn, "a.example", "UTC", false).unwrap();
        let root = add_user(&conn, "root@example.com", "x", true, 0).unwrap();
        let ann = add_user(&conn, "ann@example.com", "x", false, 0).unwrap();
        let bob = add_user(&conn, "bob@example.com", "x", false, 0).unwrap();
        assert!(grant(&conn, site.id, ann.id, Role::Owner).unwrap());
        assert!(!grant(&conn, site.id, ann.id, Role::Viewer).unwrap());
        assert_eq!(role_of(&conn, site.id, ann.id).unwrap(), Some(Role::Owner));
        grant(&conn, site.id, bob.id, Role::Editor).unwrap();

        // The last owner stays one, unless an admin acts.
        let demote = set_role(&conn, site.id, ann.id, Role::Viewer, true).unwrap();
        assert_eq!(demote, MemberChange::LastOwner);
        let leave = remove_member(&conn, site.id, ann.id, true).unwrap();
        assert_eq!(leave, MemberChange::LastOwner);
        assert_eq!(
            set_role(&conn, site.id, root.id, Role::Viewer, true).unwrap(),
            MemberChange::NotAMember
        );
        set_role(&conn, site.id, bob.id, Role::Owner, true).unwrap();
        assert_eq!(
            set_role(&conn, site.id, ann.id, Role::Viewer, true).unwrap(),
            MemberChange::Done
        );
        let roles: Vec<(String, Role)> = members(&conn, site.id)
            .unwrap()
            .into_iter()
            .map(|m| (m.email, m.role))
            .collect();
        assert_eq!(
            roles,
            [
                ("ann@example.com".to_string(), Role::Viewer),
                ("bob@example.com".to_string(), Role::Owner)
            ]
        );

        // Removing a user takes their sessions and memberships along, and
        // names the sites left without an owner; the last admin stays.
        create_session(&conn, b"t", bob.id, "csrf", 0, 100).unwrap();
        assert_eq!(
            remove_user(&conn, "BOB@example.com").unwrap(),
            UserRemoval::Removed {
                ownerless: vec!["a.example".into()]
            }
        );
        assert!(find_session(&conn, b"t", 50, 100, 1000).unwrap().is_none());
        assert_eq!(members(&conn, site.id).unwrap().len(), 1);
        assert_eq!(
            remove_user(&conn, "root@example.com").unwrap(),
            UserRemoval::LastAdmin
        );
        assert!(matches!(
            remove_user(&conn, "bob@example.com"),
            Err(StoreError::NoSuchUser(_))
        ));
    }

    /// Counts the busy waits that began (a handler's first call for a
    /// statement gets 0), and keeps waiting.
    static BUSY_WAITS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    fn count_busy_wait(retries: i32) -> bool {
        if retries == 0 {
            BUSY_WAITS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
        true
    }

    #[test]
    fn two_removals_at_once_leave_an_admin() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tally.db");
        let open = || {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "journal_mode", "wal").unwrap();
            conn
        };
        let mut conn = open();
        super::super::migrate::run(&mut conn).unwrap();
        add_user(&conn, "a@example.com", "x", true, 0).unwrap();
        add_user(&conn, "b@example.com", "x", true, 0).unwrap();
        // Another writer holds the database while both removals start, so
        // each has begun before either can finish.
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        let removals: Vec<_> = ["a@example.com", "b@example.com"]
            .into_iter()
            .map(|email| {
                let conn = open();
                conn.busy_handler(Some(count_busy_wait)).unwrap();
                std::thread::spawn(move || remove_user(&conn, email).unwrap())
            })
            .collect();
        while BUSY_WAITS.load(std::sync::atomic::Ordering::SeqCst) < 2 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        conn.execute_batch("COMMIT").unwrap();
        let mut outcomes: Vec<_> = removals.into_iter().map(|t| t.join().unwrap()).collect();
        outcomes.sort_by_key(|o| *o == UserRemoval::LastAdmin);
        assert_eq!(
            outcomes,
            [
                UserRemoval::Removed { ownerless: vec![] },
                UserRemoval::LastAdmin
            ]
        );
        assert_eq!(
            conn.query_row("SELECT count(*) FROM users WHERE admin = 1", [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap(),
            1
        );
    }

    #[test]
    fn share_links_are_found_by_their_hash_at_their_site_only() {
        let conn = db();
        let a = super::super::sites::add_site(&conn, "a.example", "UTC", false).unwrap();
        let b = super::super::sites::add_site(&conn, "b.example", "UTC", false).unwrap();
        add_share_link(&conn, a.id, "Wiki", b"hash", "ab12", 0).unwrap();
        assert!(share_link_valid(&conn, a.id, b"hash").unwrap());
        assert!(!share_link_valid(&conn, b.id, b"hash").unwrap());
        assert!(!share_link_valid(&conn, a.id, b"other").unwrap());
        let links = share_links(&conn, a.id).unwrap();
        assert_eq!(
            (links[0].name.as_str(), links[0].hint.as_str()),
            ("Wiki", "ab12")
        );
    }

    #[test]
    fn sessions_expire_and_end_with_a_new_password() {
        let conn = db();
        let user = add_user(&conn, "a@example.com", "x", true, 0).unwrap();
        create_session(&conn, b"t1", user.id, "csrf", 0, 100).unwrap();
        assert_eq!(
            find_session(&conn, b"t1", 50, 100, 1000)
                .unwrap()
                .unwrap()
                .csrf_token,
            "csrf"
        );
        assert!(
            find_session(&conn, b"t1", 100, 100, 1000)
                .unwrap()
                .is_none()
        );
        assert_eq!(delete_expired_sessions(&conn, 100).unwrap(), 1);
        create_session(&conn, b"t2", user.id, "csrf", 0, 100).unwrap();
        set_password(&conn, "a@example.com", "y").unwrap();
        assert!(find_session(&conn, b"t2", 50, 100, 1000).unwrap().is_none());
    }

    #[test]
    fn sessions_slide_within_the_idle_time_and_the_limit_from_sign_in() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("tally.db")).unwrap();
        super::super::migrate::run(&mut conn).unwrap();
        let user = add_user(&conn, "a@example.com", "x", true, 0).unwrap();
        let (idle, max) = (100, 1000);
        create_session(&conn, b"t", user.id, "csrf", 0, idle).unwrap();
        let find = |now| find_session(&conn, b"t", now, idle, max).unwrap();
        assert_eq!(find(99).unwrap().expires_at, 100);
        touch_session(&conn, b"t", 199).unwrap();
        assert_eq!(find(150).unwrap().expires_at, 199);
        // Never moved earlier.
        touch_session(&conn, b"t", 120).unwrap();
        assert_eq!(find(150).unwrap().expires_at, 199);
        assert!(find(199).is_none(), "idle past the expiry");
        // An expiry further out than the idle time is not believed.
        assert!(find_session(&conn, b"t", 50, 100, max).unwrap().is_none());
        assert!(find_session(&conn, b"t", 99, 100, max).unwrap().is_some());
        // The limit from sign-in holds whatever the expiry says.
        touch_session(&conn, b"t", 1050).unwrap();
        assert!(find(999).is_some());
        assert!(find(1000).is_none());
    }
}
