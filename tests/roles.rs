//! Roles per site against the real binary: what viewers, editors, owners
//! and admins may change; adding, changing and removing members; removing
//! users; share links kept only as hashes, also after an upgrade.

mod common;

use common::client::Client;
use common::{Env, PASSWORD};

fn user_id(env: &Env, email: &str) -> String {
    env.count(&format!("SELECT id FROM users WHERE email = '{email}'"))
        .to_string()
}

/// Everything a settings form of `domain` can change, as one string.
fn fingerprint(env: &Env, domain: &str) -> String {
    env.db()
        .query_row(
            "SELECT coalesce((SELECT timezone || '|' || public || '|' || excluded_ips || '|' || excluded_paths
                                FROM sites WHERE domain = ?1), 'gone')
                    || '|' || (SELECT count(*) FROM goals)
                    || '|' || (SELECT count(*) FROM share_links)
                    || '|' || (SELECT group_concat(user_id || role) FROM site_members)
                    || '|' || (SELECT count(*) FROM api_keys)",
            [domain],
            |r| r.get(0),
        )
        .unwrap()
}

#[test]
fn each_role_changes_only_what_it_may() {
    let env = Env::new("");
    env.add_site("example.com");
    env.add_site("ownerless.example");
    env.add_user("admin@example.com", &[]);
    env.add_member("owner@example.com", "example.com", "owner");
    env.add_member("editor@example.com", "example.com", "editor");
    env.add_member("viewer@example.com", "example.com", "viewer");
    env.add_member("other@example.com", "ownerless.example", "viewer");
    let server = env.start();
    let (mut owner, owner_csrf) = Client::signed_in(&server, "owner@example.com");
    let (mut editor, editor_csrf) = Client::signed_in(&server, "editor@example.com");
    let (mut viewer, viewer_csrf) = Client::signed_in(&server, "viewer@example.com");
    let (mut admin, admin_csrf) = Client::signed_in(&server, "admin@example.com");

    // What each sees: viewers the dashboard only, without a settings link.
    let dash = viewer.get("/example.com");
    assert_eq!(dash.status, 200);
    assert!(!dash.body.contains("/example.com/settings"));
    assert_eq!(viewer.get("/example.com/settings").status, 403);
    assert!(
        editor
            .get("/example.com")
            .body
            .contains("/example.com/settings")
    );
    let page = editor.get("/example.com/settings");
    assert_eq!(page.status, 200);
    for shown in [
        "value=\"goal_add\"",
        "value=\"exclusions\"",
        "value=\"timezone\"",
        "owner@example.com",
    ] {
        assert!(page.body.contains(shown), "editor lacks {shown}");
    }
    for hidden in [
        "value=\"public\"",
        "value=\"share_add\"",
        "value=\"member_add\"",
        "value=\"member_remove\"",
        "value=\"remove\"",
        "value=\"key_add\"",
    ] {
        assert!(!page.body.contains(hidden), "editor sees {hidden}");
    }
    let page = owner.get("/example.com/settings");
    for shown in [
        "value=\"public\"",
        "value=\"share_add\"",
        "value=\"member_add\"",
        "value=\"member_remove\"",
        "value=\"remove\"",
    ] {
        assert!(page.body.contains(shown), "owner lacks {shown}");
    }
    assert!(!page.body.contains("value=\"key_add\""));

    // Something for the removing forms to aim at.
    assert_eq!(
        owner
            .settings(
                "example.com",
                &owner_csrf,
                "goal_add",
                &[("event", "Signup"), ("page", "")]
            )
            .status,
        303
    );
    assert_eq!(
        owner
            .settings("example.com", &owner_csrf, "share_add", &[("name", "Wiki")])
            .status,
        200
    );
    let goal = env.count("SELECT id FROM goals").to_string();
    let share = env.count("SELECT id FROM share_links").to_string();
    let viewer_id = user_id(&env, "viewer@example.com");
    let editor_id = user_id(&env, "editor@example.com");

    let configure: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("timezone", vec![("timezone", "Europe/Berlin")]),
        ("goal_add", vec![("event", "Other"), ("page", "")]),
        ("goal_remove", vec![("id", &goal)]),
        (
            "exclusions",
            vec![("excluded_ips", "192.0.2.1"), ("excluded_paths", "/x")],
        ),
    ];
    let own: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("public", vec![("public", "1")]),
        ("share_add", vec![("name", "Leak")]),
        ("share_remove", vec![("id", &share)]),
        (
            "member_add",
            vec![("email", "admin@example.com"), ("role", "owner")],
        ),
        ("member_role", vec![("id", &viewer_id), ("role", "owner")]),
        ("member_remove", vec![("id", &editor_id)]),
        ("remove", vec![("confirm", "example.com")]),
    ];
    let keys: Vec<(&str, Vec<(&str, &str)>)> = vec![("key_add", vec![("name", "mine")])];

    let before = fingerprint(&env, "example.com");
    for (action, fields) in configure.iter().chain(&own).chain(&keys) {
        let r = viewer.settings("example.com", &viewer_csrf, action, fields);
        assert_eq!(r.status, 403, "viewer {action}: {}", r.body);
    }
    for (action, fields) in own.iter().chain(&keys) {
        let r = editor.settings("example.com", &editor_csrf, action, fields);
        assert_eq!(r.status, 403, "editor {action}: {}", r.body);
    }
    for (action, fields) in &keys {
        let r = owner.settings("example.com", &owner_csrf, action, fields);
        assert_eq!(r.status, 403, "owner {action}: {}", r.body);
    }
    assert_eq!(
        fingerprint(&env, "example.com"),
        before,
        "a refusal changed something"
    );

    // Editors change what they may.
    for (action, fields) in &configure {
        let r = editor.settings("example.com", &editor_csrf, action, fields);
        assert_eq!(r.status, 303, "editor {action}: {}", r.body);
    }
    assert_eq!(env.count("SELECT count(*) FROM goals"), 1);
    assert_eq!(
        env.count(
            "SELECT count(*) FROM sites WHERE timezone = 'Europe/Berlin' AND excluded_paths = '/x'"
        ),
        1
    );
    // Owners do the rest; the site goes last.
    for (action, fields) in &own {
        let r = owner.settings("example.com", &owner_csrf, action, fields);
        assert!(
            [200, 303].contains(&r.status),
            "owner {action}: {} {}",
            r.status,
            r.body
        );
    }
    assert_eq!(
        env.count("SELECT count(*) FROM sites WHERE domain = 'example.com'"),
        0
    );

    // Admins do everything at a site they are no member of.
    let other_id = user_id(&env, "other@example.com");
    let ownerless = "ownerless.example";
    for (action, fields) in [
        ("timezone", vec![("timezone", "Asia/Tokyo")]),
        ("public", vec![("public", "1")]),
        ("share_add", vec![("name", "Board")]),
        (
            "member_role",
            vec![("id", other_id.as_str()), ("role", "editor")],
        ),
        ("key_add", vec![("name", "grafana")]),
        ("member_remove", vec![("id", other_id.as_str())]),
        ("remove", vec![("confirm", ownerless)]),
    ] {
        let r = admin.settings(ownerless, &admin_csrf, action, &fields);
        assert!(
            [200, 303].contains(&r.status),
            "admin {action}: {} {}",
            r.status,
            r.body
        );
    }
    assert_eq!(env.count("SELECT count(*) FROM sites"), 0);
    assert_eq!(env.count("SELECT count(*) FROM api_keys"), 1);
}

#[test]
fn members_are_added_changed_and_removed_at_once() {
    let env = Env::new("");
    env.add_site("example.com");
    env.add_site("elsewhere.example");
    env.add_member("owner@example.com", "example.com", "owner");
    env.add_member("bob@example.com", "elsewhere.example", "viewer");
    let server = env.start();
    let (mut owner, csrf) = Client::signed_in(&server, "owner@example.com");
    let (mut bob, _) = Client::signed_in(&server, "bob@example.com");
    assert_eq!(bob.get("/example.com").status, 404);

    // Bad input names the field and changes nothing.
    let unknown = owner.settings(
        "example.com",
        &csrf,
        "member_add",
        &[("email", "nobody@example.com"), ("role", "viewer")],
    );
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    assert!(
        unknown.body.contains("nobody@example.com"),
        "{}",
        unknown.body
    );
    let bad_role = owner.settings(
        "example.com",
        &csrf,
        "member_add",
        &[("email", "bob@example.com"), ("role", "god")],
    );
    assert_eq!(bad_role.status, 400);
    assert!(bad_role.body.contains("role"), "{}", bad_role.body);
    assert_eq!(env.count("SELECT count(*) FROM site_members"), 2);

    let added = owner.settings(
        "example.com",
        &csrf,
        "member_add",
        &[("email", "BOB@example.com"), ("role", "viewer")],
    );
    assert_eq!(added.status, 303, "{}", added.body);
    assert_eq!(bob.get("/example.com").status, 200);
    assert_eq!(bob.get("/example.com/settings").status, 403);
    let page = owner.get("/example.com/settings");
    assert!(page.body.contains("bob@example.com"), "members are listed");
    let again = owner.settings(
        "example.com",
        &csrf,
        "member_add",
        &[("email", "bob@example.com"), ("role", "owner")],
    );
    assert_eq!(again.status, 400, "already a member");

    let bob_id = user_id(&env, "bob@example.com");
    let promoted = owner.settings(
        "example.com",
        &csrf,
        "member_role",
        &[("id", &bob_id), ("role", "editor")],
    );
    assert_eq!(promoted.status, 303);
    assert_eq!(bob.get("/example.com/settings").status, 200);

    let removed = owner.settings("example.com", &csrf, "member_remove", &[("id", &bob_id)]);
    assert_eq!(removed.status, 303);
    // The same session, the next request: no longer a member.
    assert_eq!(bob.get("/example.com").status, 404);
    assert_eq!(bob.get("/example.com/settings").status, 404);
    assert!(!bob.get("/").body.contains("example.com/"));
    assert!(
        !owner
            .get("/example.com/settings")
            .body
            .contains("bob@example.com")
    );
}

#[test]
fn a_site_keeps_an_owner_unless_an_admin_acts() {
    let env = Env::new("");
    env.add_site("example.com");
    env.add_user("admin@example.com", &[]);
    env.add_member("owner@example.com", "example.com", "owner");
    env.add_member("second@example.com", "example.com", "editor");
    let server = env.start();
    let (mut owner, csrf) = Client::signed_in(&server, "owner@example.com");
    let me = user_id(&env, "owner@example.com");
    let second = user_id(&env, "second@example.com");

    let demote = owner.settings(
        "example.com",
        &csrf,
        "member_role",
        &[("id", &me), ("role", "editor")],
    );
    assert_eq!(demote.status, 409, "{}", demote.body);
    assert!(demote.body.contains("last owner"), "{}", demote.body);
    let leave = owner.settings("example.com", &csrf, "member_remove", &[("id", &me)]);
    assert_eq!(leave.status, 409);
    assert_eq!(
        env.count("SELECT count(*) FROM site_members WHERE role = 'owner'"),
        1
    );

    // With a second owner, the first may step down.
    let promote = owner.settings(
        "example.com",
        &csrf,
        "member_role",
        &[("id", &second), ("role", "owner")],
    );
    assert_eq!(promote.status, 303);
    let stepped = owner.settings(
        "example.com",
        &csrf,
        "member_role",
        &[("id", &me), ("role", "viewer")],
    );
    assert_eq!(stepped.status, 303);
    assert_eq!(owner.get("/example.com/settings").status, 403);

    // An admin may leave a site without owners; admins manage it.
    let (mut admin, admin_csrf) = Client::signed_in(&server, "admin@example.com");
    let r = admin.settings(
        "example.com",
        &admin_csrf,
        "member_remove",
        &[("id", &second)],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(
        env.count("SELECT count(*) FROM site_members WHERE role = 'owner'"),
        0
    );
}

#[test]
fn removing_a_user_ends_their_sessions_and_memberships() {
    let env = Env::new("");
    env.add_site("example.com");
    env.add_user("admin@example.com", &[]);
    env.add_member("member@example.com", "example.com", "owner");
    let server = env.start();
    let (mut member, _) = Client::signed_in(&server, "member@example.com");
    assert_eq!(member.get("/example.com").status, 200);
    let id = user_id(&env, "member@example.com");
    assert_eq!(
        env.count(&format!(
            "SELECT count(*) FROM login_sessions WHERE user_id = {id}"
        )),
        1
    );

    let out = env.tally(&["user", "remove", "member@example.com"]);
    assert!(out.contains("member@example.com"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("without an owner") && l.ends_with(" example.com")),
        "names the site left without an owner: {out}"
    );
    // The cookie opens nothing any more.
    let after = member.get("/example.com");
    assert_eq!(after.status, 303);
    assert!(after.header("location").unwrap().starts_with("/login"));
    assert_eq!(
        env.count("SELECT count(*) FROM users WHERE email = 'member@example.com'"),
        0
    );
    assert_eq!(
        env.count(&format!(
            "SELECT count(*) FROM login_sessions WHERE user_id = {id}"
        )),
        0
    );
    assert_eq!(env.count("SELECT count(*) FROM site_members"), 0);

    // Unknown users and the last admin are refused as usage errors.
    let unknown = env.tally_raw(&["user", "remove", "nobody@example.com"]);
    assert_eq!(unknown.status.code(), Some(2));
    let last = env.tally_raw(&["user", "remove", "admin@example.com"]);
    assert_eq!(last.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&last.stderr).contains("last admin"));
    assert_eq!(env.count("SELECT count(*) FROM users WHERE admin = 1"), 1);
    env.add_user("root@example.com", &[]);
    env.tally(&["user", "remove", "ADMIN@example.com"]);
    assert_eq!(env.count("SELECT count(*) FROM users"), 1);
}

/// Whether `needle` is anywhere in the database's files (main and WAL).
fn in_database_files(env: &Env, needle: &str) -> bool {
    ["tally.db", "tally.db-wal"].iter().any(|f| {
        std::fs::read(env.data_dir().join(f))
            .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
            .unwrap_or(false)
    })
}

/// Every share link row, each column as text (blobs as hex).
fn share_rows(env: &Env) -> Vec<String> {
    let db = env.db();
    let mut stmt = db.prepare("SELECT * FROM share_links").unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        let mut cells = Vec::new();
        for i in 0..n {
            cells.push(match r.get_ref(i)? {
                rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                rusqlite::types::ValueRef::Blob(b) => {
                    String::from_utf8_lossy(b).into_owned()
                        + &b.iter().map(|x| format!("{x:02x}")).collect::<String>()
                }
                v => format!("{v:?}"),
            });
        }
        Ok(cells.join("|"))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

#[test]
fn share_tokens_are_stored_hashed_and_shown_once() {
    let env = Env::new("");
    env.add_site("example.com");
    env.add_member("owner@example.com", "example.com", "owner");
    let server = env.start();
    let (mut owner, csrf) = Client::signed_in(&server, "owner@example.com");
    let made = owner.settings("example.com", &csrf, "share_add", &[("name", "Team wiki")]);
    assert_eq!(made.status, 200, "the new link is shown on the answer");
    let marker = "/share/example.com?auth=";
    let at = made.body.find(marker).expect("the new link is shown") + marker.len();
    let token = &made.body[at..at + 64];
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");

    let shared = Client::new(&server).get(&format!("/share/example.com?auth={token}"));
    assert_eq!(shared.status, 200, "{}", shared.body);
    assert_eq!(
        Client::new(&server)
            .get("/share/example.com?auth=0000")
            .status,
        404
    );

    let rows = share_rows(&env);
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].contains(token), "stored as is: {}", rows[0]);
    assert!(
        !in_database_files(&env, token),
        "the token is in the database files"
    );

    let later = owner.get("/example.com/settings");
    assert!(later.body.contains("Team wiki"));
    assert!(!later.body.contains(token), "shown again after creation");
    assert!(
        later.body.contains(&token[..4]),
        "a short hint tells links apart"
    );
}

/// A database as the previous release left it: schema 8, a member, a share
/// link stored with its token.
fn old_database(env: &Env, token: &str) {
    std::fs::create_dir_all(env.data_dir()).unwrap();
    let db = rusqlite::Connection::open(env.data_dir().join("tally.db")).unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f.ends_with(".sql") && f.as_str() < "0009")
        .collect();
    files.sort();
    assert_eq!(files.len(), 8);
    for f in &files {
        db.execute_batch(&std::fs::read_to_string(dir.join(f)).unwrap())
            .unwrap();
    }
    db.pragma_update(None, "user_version", 8).unwrap();
    let hash = tally::auth::hash_password(PASSWORD).unwrap();
    db.execute_batch(&format!(
        "INSERT INTO sites (id, domain, timezone, public, created_at) VALUES (1, 'example.com', 'UTC', 0, 0);
         INSERT INTO users (id, email, password_hash, admin, created_at) VALUES (1, 'member@example.com', '{hash}', 0, 0);
         INSERT INTO site_members (site_id, user_id) VALUES (1, 1);
         INSERT INTO share_links (site_id, name, token, created_at) VALUES (1, 'Old link', '{token}', 0);"
    ))
    .unwrap();
}

#[test]
fn an_old_database_keeps_its_share_links_and_members() {
    let env = Env::new("");
    let token = "5eed".repeat(16);
    old_database(&env, &token);
    let server = env.start();
    assert!(env.count("PRAGMA user_version") >= 9);

    let shared = Client::new(&server).get(&format!("/share/example.com?auth={token}"));
    assert_eq!(shared.status, 200, "{}", shared.body);
    let rows = share_rows(&env);
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].contains(&token), "stored as is: {}", rows[0]);
    assert!(rows[0].contains("Old link"));
    assert!(
        !in_database_files(&env, &token),
        "the old token is still in the files"
    );

    // Members had every right before roles: they are owners now.
    assert_eq!(
        env.count("SELECT count(*) FROM site_members WHERE role = 'owner'"),
        1
    );
    let (mut member, csrf) = Client::signed_in(&server, "member@example.com");
    let page = member.get("/example.com/settings");
    assert!(page.body.contains("Old link"));
    assert!(!page.body.contains(&token));
    let r = member.settings("example.com", &csrf, "public", &[("public", "1")]);
    assert_eq!(r.status, 303, "{}", r.body);
}
