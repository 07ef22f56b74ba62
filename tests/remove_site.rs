//! Removing a site with many rows: the site goes at once, its rows are
//! deleted afterwards in batches while other sites' events keep being
//! stored, and nothing of it is ever counted again, not even under the
//! same domain added anew.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::client::Client;
use common::{CHROME, Env, PASSWORD, Server};

/// Rows of `site_id` in every table that holds a site's traffic.
fn rows_of(env: &Env, site_id: i64) -> i64 {
    [
        "events",
        "visits",
        "rollups",
        "rollup_sketches",
        "imported_rollups",
    ]
    .iter()
    .map(|t| {
        env.count(&format!(
            "SELECT COUNT(*) FROM {t} WHERE site_id = {site_id}"
        ))
    })
    .sum()
}

fn site_id(env: &Env, domain: &str) -> i64 {
    env.count(&format!("SELECT id FROM sites WHERE domain = '{domain}'"))
}

fn pageview(domain: &str, path: &str) -> String {
    serde_json::json!({"n": "pageview", "u": format!("https://{domain}{path}"), "d": domain})
        .to_string()
}

/// Pageviews of `domain` this year, from the rollups, and with a filter
/// from the raw events.
fn pageviews(server: &Server, key: &str, domain: &str) -> (i64, i64) {
    let q =
        format!("/api/v1/stats/aggregate?site_id={domain}&period=12mo&metrics=pageviews,visitors");
    let rollups = server.stats(key, &q);
    let raw = server.stats(key, &format!("{q}&filters=event:page!%3D/none"));
    assert_eq!(rollups.status, 200, "{}", rollups.body);
    assert_eq!(raw.status, 200, "{}", raw.body);
    let n = |r: &common::Reply| r.json()["results"]["pageviews"]["value"].as_i64().unwrap();
    (n(&rollups), n(&raw))
}

#[test]
fn removing_a_large_site_deletes_its_rows_in_batches_behind_ingest() {
    let env = Env::new("");
    env.add_site("big.example");
    env.add_site("other.example");
    env.add_site("cli.example");
    env.add_user("admin@example.com", &[]);
    let key = env.api_key();
    for (site, seed) in [("big.example", "3"), ("cli.example", "4")] {
        env.tally(&[
            "demo", "--site", site, "--events", "8000", "--days", "20", "--seed", seed,
        ]);
    }
    let server = env.start();
    server.settle();
    let big = site_id(&env, "big.example");
    let before = rows_of(&env, big);
    assert!(before > 10_000, "{before} rows");

    // Another site's pageviews all along.
    let stop = Arc::new(AtomicBool::new(false));
    let base = server.base.clone();
    let sender = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let agent = common::agent();
            let mut sent = 0;
            while !stop.load(Ordering::Relaxed) || sent < 50 {
                let r = agent
                    .post(format!("{base}/api/event"))
                    .header("User-Agent", CHROME)
                    .header("Content-Type", "text/plain")
                    .send(pageview("other.example", "/meanwhile").as_str());
                assert_eq!(common::reply(r).status, 202, "event {sent}");
                sent += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            sent
        }
    });

    let mut c = Client::new(&server);
    assert_eq!(c.sign_in("admin@example.com", PASSWORD).status, 303);
    let csrf = c.csrf("/big.example/settings");
    let r = c.settings(
        "big.example",
        &csrf,
        "remove",
        &[("confirm", "big.example")],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    // Gone at once for the dashboard and the API.
    assert!(!c.get("/").body.contains("big.example"));
    let r = server.stats(
        &key,
        "/api/v1/stats/aggregate?site_id=big.example&period=30d&metrics=pageviews",
    );
    assert_eq!(r.status, 404, "{}", r.body);
    // A pageview sent right after may still be taken (ingest's directory
    // keeps a found site a few seconds): it must not be counted either.
    server.event(&pageview("big.example", "/late"), CHROME);

    // Every row goes, in the background.
    let deadline = Instant::now() + Duration::from_secs(60);
    while rows_of(&env, big) > 0 {
        assert!(
            Instant::now() < deadline,
            "{} rows left",
            rows_of(&env, big)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // `tally site remove` deletes the rows itself, in batches, beside the
    // running server, which goes on storing the other site's events: each
    // of its transactions waits for the server's writer rather than
    // failing with "database is locked".
    let cli = site_id(&env, "cli.example");
    assert!(rows_of(&env, cli) > 10_000);
    let out = env.tally(&["site", "remove", "cli.example", "--yes"]);
    assert!(out.contains("rows of its data deleted"), "{out}");
    assert_eq!(rows_of(&env, cli), 0);

    stop.store(true, Ordering::Relaxed);
    let sent: i64 = sender.join().unwrap();
    server.settle();
    let other = site_id(&env, "other.example");
    assert_eq!(
        env.count(&format!(
            "SELECT COUNT(*) FROM events WHERE site_id = {other} AND path = '/meanwhile'"
        )),
        sent
    );
    assert_eq!(pageviews(&server, &key, "other.example"), (sent, sent));

    // The same domains added again are new sites, with nothing of the old.
    for domain in ["big.example", "cli.example"] {
        env.add_site(domain);
        let again = site_id(&env, domain);
        assert!(again > cli, "{again}");
        assert_eq!(pageviews(&server, &key, domain), (0, 0));
    }
    // Late rows of the old site (the pageview above and its visit, which
    // the second pass after the removal deletes) stay gone.
    std::thread::sleep(Duration::from_secs(2));
    server.settle();
    assert_eq!(pageviews(&server, &key, "big.example"), (0, 0));
    assert_eq!(rows_of(&env, big), 0, "the old site's rows, late ones too");
    drop(c);
    assert_eq!(server.terminate(), 0);
}
