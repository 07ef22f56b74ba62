//! `tally check`: the privacy report passes on a sound setup and fails (exit
//! 1) on each broken condition; a broken config exits 2.

mod common;

use common::*;

fn check(env: &Env) -> (i32, String) {
    let out = env.tally_raw(&["check"]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn a_sound_setup_passes_and_says_what_is_collected() {
    let env = Env::new("");
    // Before the first start there is no database; that is fine.
    let (code, text) = check(&env);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("does not exist yet"), "{text}");

    env.add_site("example.com");
    let s = env.start();
    assert_eq!(
        s.event(&pageview("https://example.com/"), CHROME).status,
        202
    );
    drop(s);
    let (code, text) = check(&env);
    assert_eq!(code, 0, "{text}");
    for expected in [
        "tally.toml is valid",
        "integrity check passed",
        "1 site(s), 1 events, 1 visits",
        "no column for IP addresses or User-Agents",
        "raw events and visits: 395 days",
        "location: not collected",
        "never stored: IP addresses, User-Agent strings, cookies",
        "event journal: ",
        "FAIL",
    ] {
        if expected == "FAIL" {
            assert!(!text.contains(expected), "{text}");
        } else {
            assert!(text.contains(expected), "missing {expected:?}:\n{text}");
        }
    }
    assert!(text.contains("Result: every condition holds"), "{text}");
}

#[test]
fn retention_over_25_months_fails() {
    let env = Env::new("[retention]\naggregates_days = 800\n");
    let (code, text) = check(&env);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("FAIL retention.aggregates_days = 800: over 25 months"),
        "{text}"
    );
    assert!(
        text.contains("condition(s) of the privacy check fail"),
        "{text}"
    );
}

#[test]
fn stale_data_salts_and_identifier_columns_fail() {
    let env = Env::new("");
    env.add_site("example.com");
    let s = env.start();
    assert_eq!(
        s.event(&pageview("https://example.com/"), CHROME).status,
        202
    );
    drop(s);
    // Data older than retention, as after raising then lowering it with the
    // server stopped; an old salt; and a column that could hold addresses.
    env.db()
        .execute_batch(
            "UPDATE events SET ts = ts - 500 * 86400;
             INSERT INTO salts (day, salt) VALUES (unixepoch() / 86400 - 3, zeroblob(32));
             CREATE TABLE leak (id INTEGER PRIMARY KEY, ip TEXT);",
        )
        .unwrap();
    let (code, text) = check(&env);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("FAIL oldest raw event: 500 days old"),
        "{text}"
    );
    assert!(
        text.contains("salt(s) older than 48 hours remain"),
        "{text}"
    );
    assert!(text.contains("leak.ip"), "{text}");
    assert!(
        text.contains("3 condition(s) FAIL") || text.contains("4 condition(s) FAIL"),
        "{text}"
    );
}

/// A site removed while the server was stopped (`tally site remove` was
/// cut short, say) leaves rows that the server's batches would delete: the
/// report says so, and passes once they are gone.
#[test]
fn rows_of_removed_sites_fail_until_deleted() {
    let env = Env::new("");
    env.add_site("example.com");
    env.add_site("gone.example");
    let s = env.start();
    for domain in ["example.com", "gone.example"] {
        let event =
            serde_json::json!({"n": "pageview", "u": format!("https://{domain}/"), "d": domain});
        assert_eq!(s.event(&event.to_string(), CHROME).status, 202);
    }
    drop(s);
    // What a removal leaves before its batches: the site row gone, the
    // entry that marks its rows for deletion, the rows.
    env.db()
        .execute_batch(
            "INSERT INTO removed_sites (site_id, removed_at)
                 SELECT id, unixepoch() FROM sites WHERE domain = 'gone.example';
             DELETE FROM sites WHERE domain = 'gone.example';",
        )
        .unwrap();
    let (code, text) = check(&env);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("FAIL 2 events and visits of removed sites remain"),
        "{text}"
    );
    // The server's first retention pass, at start, deletes them.
    let s = env.start();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while env.count(
        "SELECT (SELECT COUNT(*) FROM events WHERE site_id NOT IN (SELECT id FROM sites))
              + (SELECT COUNT(*) FROM visits WHERE site_id NOT IN (SELECT id FROM sites))",
    ) > 0
    {
        assert!(std::time::Instant::now() < deadline, "not deleted");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    drop(s);
    let (code, text) = check(&env);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("removed sites: none of their events or visits left"),
        "{text}"
    );
}

#[test]
fn a_bad_config_exits_2() {
    let env = Env::new("[retention]\nraw_events_days = 0\n");
    let (code, text) = check(&env);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("retention.raw_events_days"), "{text}");
}

#[test]
fn unencrypted_mail_to_another_host_fails() {
    let env = Env::new(
        "[smtp]\nhost = \"mail.example.net\"\nsecurity = \"none\"\nfrom = \"tally@example.com\"\n",
    );
    let (code, text) = check(&env);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("FAIL smtp.security = \"none\" with mail.example.net"),
        "{text}"
    );
    let env = Env::new(
        "[smtp]\nhost = \"127.0.0.1\"\nsecurity = \"none\"\nfrom = \"tally@example.com\"\n",
    );
    let (code, text) = check(&env);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("also e-mailed to each site's users through 127.0.0.1:587"),
        "{text}"
    );
}
