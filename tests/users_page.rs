//! Removing users from the dashboard (`/users`, admins only) and members
//! from the command line (`tally user remove EMAIL --site DOMAIN`), against
//! the real binary.

mod common;

use common::client::Client;
use common::{Env, Reply};

/// Users, memberships and sessions, as one string: what a refused request
/// must leave as it was.
fn fingerprint(env: &Env) -> String {
    env.db()
        .query_row(
            "SELECT (SELECT group_concat(email || ':' || admin, ',') FROM users)
                    || '|' || coalesce((SELECT group_concat(user_id || role, ',') FROM site_members), '')
                    || '|' || (SELECT count(*) FROM login_sessions)",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

fn remove(c: &mut Client, csrf: &str, email: &str) -> Reply {
    c.post("/users", &[("csrf", csrf), ("email", email)])
}

#[test]
fn admins_list_and_remove_users_and_nobody_else_may() {
    let env = Env::new("");
    env.add_site("example.com");
    env.add_user("admin@example.com", &[]);
    env.add_user("second@example.com", &[]);
    env.add_user("ann@example.com", &["example.com"]);
    env.add_user("bob@example.com", &["example.com"]);
    let server = env.start();

    // Anonymous: the sign-in page, which returns here.
    let mut anon = Client::new(&server);
    let r = anon.get("/users");
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/login?next=%2Fusers"));
    assert_eq!(
        anon.post("/users", &[("email", "ann@example.com")]).status,
        303
    );

    let (mut admin, admin_csrf) = Client::signed_in(&server, "admin@example.com");
    let (mut ann, ann_csrf) = Client::signed_in(&server, "ann@example.com");

    // The site list links to the page for admins only.
    assert!(admin.get("/").body.contains("href=\"/users\""));
    assert!(!ann.get("/").body.contains("href=\"/users\""));

    // Every user, whether an admin, and their sites with roles.
    let page = admin.get("/users");
    assert_eq!(page.status, 200, "{}", page.body);
    for email in [
        "admin@example.com",
        "second@example.com",
        "ann@example.com",
        "bob@example.com",
    ] {
        assert!(page.body.contains(email), "{email} missing: {}", page.body);
    }
    assert!(page.body.contains("example.com (owner)"), "{}", page.body);
    assert!(
        page.body.contains("Remove bob@example.com"),
        "{}",
        page.body
    );

    // A member: 403 on the page and on the form, even with their own token.
    let before = fingerprint(&env);
    assert_eq!(ann.get("/users").status, 403);
    assert_eq!(remove(&mut ann, &ann_csrf, "bob@example.com").status, 403);
    assert_eq!(fingerprint(&env), before);

    // An admin's form without the session's CSRF token, or with another's.
    assert_eq!(
        admin.post("/users", &[("email", "bob@example.com")]).status,
        403
    );
    assert_eq!(remove(&mut admin, &ann_csrf, "bob@example.com").status, 403);
    assert_eq!(fingerprint(&env), before);

    // Bad and unknown e-mails are named and change nothing.
    let r = remove(&mut admin, &admin_csrf, "not an email");
    assert_eq!(r.status, 400);
    assert!(r.body.contains("email:"), "{}", r.body);
    let r = remove(&mut admin, &admin_csrf, "nobody@example.com");
    assert_eq!(r.status, 404);
    assert!(r.body.contains("email: there is no user"), "{}", r.body);
    assert_eq!(fingerprint(&env), before);

    // Removing Ann ends her session at once; she is gone with her
    // membership; Bob owns example.com too, so it keeps an owner.
    assert_eq!(ann.get("/").status, 200);
    let r = remove(&mut admin, &admin_csrf, "ann@example.com");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Removed ann@example.com"), "{}", r.body);
    let r = ann.get("/");
    assert_eq!(r.status, 303, "her cookie must open nothing now");
    assert!(r.header("location").unwrap().starts_with("/login"));
    assert_eq!(ann.get("/example.com").status, 303);
    assert_eq!(
        env.count("SELECT count(*) FROM users WHERE email = 'ann@example.com'"),
        0
    );
    assert_eq!(env.count("SELECT count(*) FROM site_members"), 1);

    // Bob was the last owner now: removed all the same, and said.
    let r = remove(&mut admin, &admin_csrf, "bob@example.com");
    assert_eq!(r.status, 200);
    assert!(r.body.contains("without an owner"), "{}", r.body);
    assert!(r.body.contains("example.com."), "{}", r.body);

    // The other admin may go; then the last admin stays: 409, no change.
    assert_eq!(
        remove(&mut admin, &admin_csrf, "second@example.com").status,
        200
    );
    let page = admin.get("/users");
    assert!(page.body.contains("the last admin stays"), "{}", page.body);
    let before = fingerprint(&env);
    let r = remove(&mut admin, &admin_csrf, "admin@example.com");
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("last admin"), "{}", r.body);
    assert_eq!(fingerprint(&env), before);
    assert_eq!(admin.get("/users").status, 200);
}

#[test]
fn an_admin_may_remove_themselves_while_another_remains() {
    let env = Env::new("");
    env.add_user("admin@example.com", &[]);
    env.add_user("second@example.com", &[]);
    let server = env.start();
    let (mut admin, csrf) = Client::signed_in(&server, "admin@example.com");
    let r = remove(&mut admin, &csrf, "ADMIN@example.com");
    assert_eq!(r.status, 303);
    // Signed out: their sessions went with them.
    assert_eq!(admin.get("/users").status, 303);
    assert_eq!(env.count("SELECT count(*) FROM users"), 1);
    assert_eq!(env.count("SELECT count(*) FROM login_sessions"), 0);
}

/// `/users` is the users page, never a site's dashboard: a site's domain
/// needs a dot, from the command line and from the dashboard alike.
#[test]
fn no_site_can_take_the_users_page() {
    let env = Env::new("");
    let out = env.tally_raw(&["site", "add", "users"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a domain"));
    env.add_user("admin@example.com", &[]);
    let server = env.start();
    let (mut admin, csrf) = Client::signed_in(&server, "admin@example.com");
    let r = admin.post(
        "/sites",
        &[("csrf", &csrf), ("domain", "users"), ("timezone", "UTC")],
    );
    assert_eq!(r.status, 200);
    assert!(r.body.contains("Enter a bare domain"), "{}", r.body);
    assert_eq!(env.count("SELECT count(*) FROM sites"), 0);
    assert!(
        admin
            .get("/users")
            .body
            .contains("<h1 class=\"page-title\">Users</h1>")
    );
}

#[test]
fn user_remove_with_site_ends_only_those_memberships() {
    let env = Env::new("");
    for d in ["a.example", "b.example", "c.example"] {
        env.add_site(d);
    }
    env.add_user("ann@example.com", &["a.example", "b.example", "c.example"]);
    env.add_user("bob@example.com", &["b.example"]);
    let sites_of = |email: &str| -> String {
        env.db()
            .query_row(
                "SELECT coalesce(group_concat(s.domain, ','), '') FROM
                   (SELECT s.domain FROM site_members m JOIN sites s ON s.id = m.site_id
                      JOIN users u ON u.id = m.user_id WHERE u.email = ?1 ORDER BY s.domain) s",
                [email],
                |r| r.get(0),
            )
            .unwrap()
    };

    let out = env.tally(&[
        "user",
        "remove",
        "ann@example.com",
        "--site",
        "a.example",
        "--site",
        "b.example",
    ]);
    assert!(out.contains("Removed ann@example.com from a.example, b.example"));
    // Ann was a.example's only owner (b.example has Bob): said, not refused.
    assert!(
        out.contains("Sites now without an owner (admins manage them): a.example\n"),
        "{out}"
    );
    assert_eq!(sites_of("ann@example.com"), "c.example");
    assert_eq!(sites_of("bob@example.com"), "b.example");
    assert_eq!(env.count("SELECT count(*) FROM users"), 2);

    // All or nothing: a site she is not a member of, or no such site.
    for bad in ["b.example", "nope.example", "not a domain"] {
        let out = env.tally_raw(&[
            "user",
            "remove",
            "ann@example.com",
            "--site",
            "c.example",
            "--site",
            bad,
        ]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert_eq!(sites_of("ann@example.com"), "c.example", "{bad}");
    }
    let out = env.tally_raw(&[
        "user",
        "remove",
        "nobody@example.com",
        "--site",
        "c.example",
    ]);
    assert_eq!(out.status.code(), Some(2));

    // Without --site the user goes, as before.
    env.tally(&["user", "remove", "ann@example.com"]);
    assert_eq!(env.count("SELECT count(*) FROM users"), 1);
}
