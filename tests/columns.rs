//! The column store kept by the server: at start it seals every complete UTC
//! day with raw events in the background (the server answers meanwhile, and
//! a restart in the middle resumes), and it follows retention and site
//! removal.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::client::Client;
use common::{CHROME, Env, PASSWORD, Server, column_answers};

const DAY: i64 = 86_400;
/// A day is sealed this long after it ends (the policy in the sealer).
const SEAL_AFTER: i64 = 3600;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn site_id(env: &Env, domain: &str) -> i64 {
    env.count(&format!("SELECT id FROM sites WHERE domain = '{domain}'"))
}

/// `columns` of `/api/health`: sealed and pending days (`None` while the
/// server has not looked yet).
fn columns(server: &Server) -> (Option<u64>, Option<u64>) {
    let h = server.get("/api/health", &[]).json();
    (
        h["columns"]["sealed_days"].as_u64(),
        h["columns"]["pending_days"].as_u64(),
    )
}

/// The days a site's store holds, from its segment files (`DAY-GEN.seg`).
fn store_days(env: &Env, site_id: i64) -> BTreeSet<i64> {
    let dir = env.data_dir().join("columns").join(site_id.to_string());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    entries
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter_map(|n| {
            let stem = n.strip_suffix(".seg")?;
            stem.split('-').next()?.parse().ok()
        })
        .collect()
}

/// The UTC days with raw events of a site that are complete (over, and
/// past the hour the policy waits).
fn complete_days(env: &Env, site_id: i64) -> BTreeSet<i64> {
    let conn = env.db();
    let mut stmt = conn
        .prepare("SELECT DISTINCT ts / 86400 FROM events WHERE site_id = ?1")
        .unwrap();
    let now = now();
    stmt.query_map([site_id], |r| r.get::<_, i64>(0))
        .unwrap()
        .map(Result::unwrap)
        .filter(|d| (d + 1) * DAY + SEAL_AFTER <= now)
        .collect()
}

/// Waits until nothing is pending and the store holds exactly the complete
/// days with raw events of `site_id` (polled: a midnight may pass
/// meanwhile); health's count is that of every site in `all`.
fn wait_built(env: &Env, server: &Server, site_id: i64, all: &[i64]) -> BTreeSet<i64> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (sealed, pending) = columns(server);
        let (have, want) = (store_days(env, site_id), complete_days(env, site_id));
        let total: usize = all.iter().map(|id| store_days(env, *id).len()).sum();
        if pending == Some(0) && have == want && sealed == Some(total as u64) {
            return have;
        }
        assert!(
            Instant::now() < deadline,
            "not built: sealed {sealed:?}, pending {pending:?}, store {have:?}, raw {want:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_server_seals_complete_days_in_the_background_and_follows_retention_and_removal() {
    let env = Env::new("");
    env.add_site("example.com");
    env.add_user("admin@example.com", &[]);
    env.tally(&[
        "demo",
        "--site",
        "example.com",
        "--events",
        "6000",
        "--days",
        "10",
        "--seed",
        "3",
    ]);
    let id = site_id(&env, "example.com");
    assert!(complete_days(&env, id).len() >= 8);

    // Killed as soon as the build has begun: the next start resumes it.
    let server = env.start();
    let deadline = Instant::now() + Duration::from_secs(60);
    while columns(&server).0.unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "nothing sealed");
        std::thread::sleep(Duration::from_millis(5));
    }
    server.kill9();

    let server = env.start();
    // Events sent while it builds are all stored.
    for i in 0..50 {
        let body = common::pageview(&format!("https://example.com/meanwhile{i}"));
        assert_eq!(server.event(&body, CHROME).status, 202);
    }
    let days = wait_built(&env, &server, id, &[id]);
    assert!(days.len() >= 8, "{days:?}");
    server.settle();
    assert_eq!(
        env.count("SELECT COUNT(*) FROM events WHERE path LIKE '/meanwhile%'"),
        50
    );
    assert!(
        server
            .log_lines()
            .iter()
            .any(|l| l.contains("column store built")),
        "a log line says the site's build is done"
    );
    drop(server);

    // A shorter retention drops the older days from the store too.
    let server = Server::start_with_env(&env.config(), &[("TALLY_RETENTION_RAW_EVENTS_DAYS", "4")]);
    let cutoff_day = (now() - 4 * DAY).div_euclid(DAY);
    let deadline = Instant::now() + Duration::from_secs(60);
    while store_days(&env, id)
        .first()
        .is_some_and(|d| *d < cutoff_day)
    {
        assert!(Instant::now() < deadline, "{:?}", store_days(&env, id));
        std::thread::sleep(Duration::from_millis(50));
    }
    let kept = wait_built(&env, &server, id, &[id]);
    assert!(kept.len() < days.len() && !kept.is_empty(), "{kept:?}");

    // A removed site's store goes with it.
    let mut c = Client::new(&server);
    assert_eq!(c.sign_in("admin@example.com", PASSWORD).status, 303);
    let csrf = c.csrf("/example.com/settings");
    let r = c.settings(
        "example.com",
        &csrf,
        "remove",
        &[("confirm", "example.com")],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let dir = env.data_dir().join("columns").join(id.to_string());
    let deadline = Instant::now() + Duration::from_secs(10);
    while dir.exists() || columns(&server).0 != Some(0) {
        assert!(Instant::now() < deadline, "{} still there", dir.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `tally import` adds past days to a site: its store is deleted, and the
/// next start seals it again with them. `tally restore` puts back an older
/// database: the whole store goes.
#[test]
fn an_import_or_a_restore_deletes_what_the_store_held() {
    let env = Env::new("");
    env.add_site("old.example");
    env.add_site("example.com");
    for (site, days, seed) in [("old.example", "10", "5"), ("example.com", "3", "6")] {
        env.tally(&[
            "demo", "--site", site, "--events", "2000", "--days", days, "--seed", seed,
        ]);
    }
    let (old, id) = (site_id(&env, "old.example"), site_id(&env, "example.com"));
    let server = env.start();
    wait_built(&env, &server, old, &[old, id]);
    let recent = wait_built(&env, &server, id, &[old, id]);
    drop(server);
    let backup = env.dir.path().join("before.db");
    env.tally(&["backup", backup.to_str().unwrap()]);

    // Days of old.example before example.com's first, imported into it.
    let first = recent.first().copied().unwrap_or(now() / DAY);
    let to = chrono::DateTime::from_timestamp((first - 1) * DAY, 0)
        .unwrap()
        .date_naive()
        .to_string();
    let csv = env.dir.path().join("old.csv");
    env.tally(&[
        "export",
        "old.example",
        "--out",
        csv.to_str().unwrap(),
        "--to",
        &to,
    ]);
    env.tally(&[
        "import",
        "--format",
        "tally-csv",
        "--site",
        "example.com",
        csv.to_str().unwrap(),
    ]);
    assert!(
        store_days(&env, id).is_empty(),
        "{:?}",
        store_days(&env, id)
    );
    assert!(!store_days(&env, old).is_empty(), "other sites keep theirs");
    let server = env.start();
    let all = wait_built(&env, &server, id, &[old, id]);
    assert!(all.len() > recent.len(), "{all:?} {recent:?}");
    drop(server);

    env.tally(&["restore", backup.to_str().unwrap()]);
    // Deleted under its lock: the directory and its lock file stay, empty
    // of what it followed and of every site.
    let columns = env.data_dir().join("columns");
    assert!(!columns.join("follows").exists());
    assert!(store_days(&env, old).is_empty() && store_days(&env, id).is_empty());
    let server = env.start();
    assert_eq!(wait_built(&env, &server, id, &[old, id]), recent);
}

/// A store answers for the database it was sealed from only: another
/// `tally.db` put in its place (a copy restored by hand, a new database in
/// an old data directory) has the old store deleted and sealed again.
#[test]
fn another_database_in_the_data_directory_has_the_store_sealed_again() {
    let env = Env::new("");
    env.add_site("a.example");
    env.tally(&[
        "demo",
        "--site",
        "a.example",
        "--events",
        "2000",
        "--days",
        "8",
        "--seed",
        "7",
    ]);
    let id = site_id(&env, "a.example");
    let server = env.start();
    let old = wait_built(&env, &server, id, &[id]);
    drop(server);

    // Another site's database, with the same site id and as many writes
    // beside a server (one demo each), copied over the first.
    let other = Env::new("");
    other.add_site("b.example");
    other.tally(&[
        "demo",
        "--site",
        "b.example",
        "--events",
        "1000",
        "--days",
        "3",
        "--seed",
        "8",
    ]);
    assert_eq!(site_id(&other, "b.example"), id);
    for name in ["tally.db-wal", "tally.db-shm", "tally.db"] {
        let _ = std::fs::remove_file(env.data_dir().join(name));
        let from = other.data_dir().join(name);
        if from.exists() {
            std::fs::copy(&from, env.data_dir().join(name)).unwrap();
        }
    }
    let server = env.start();
    let new = wait_built(&env, &server, id, &[id]);
    assert!(new.len() < old.len(), "{new:?} {old:?}");
    assert_eq!(new, complete_days(&env, id));
}

/// The store is derived: one that cannot be opened (here `columns` is a
/// regular file) never keeps the server from starting and taking events;
/// it is tried again, and built once it can be.
#[test]
fn a_store_that_cannot_be_opened_does_not_stop_the_server() {
    let env = Env::new("");
    env.add_site("example.com");
    env.tally(&[
        "demo",
        "--site",
        "example.com",
        "--events",
        "1000",
        "--days",
        "3",
        "--seed",
        "9",
    ]);
    let id = site_id(&env, "example.com");
    let path = env.data_dir().join("columns");
    std::fs::write(&path, "not a directory").unwrap();
    let server = env.start();
    let body = common::pageview("https://example.com/while-failing");
    assert_eq!(server.event(&body, CHROME).status, 202);
    assert_eq!(columns(&server), (None, None));
    server.settle();
    assert_eq!(
        env.count("SELECT COUNT(*) FROM events WHERE path = '/while-failing'"),
        1
    );
    std::fs::remove_file(&path).unwrap();
    assert!(!wait_built(&env, &server, id, &[id]).is_empty());
}

/// A site whose store cannot be written (here its directory is a regular
/// file) is tried again later, and the other sites are sealed meanwhile;
/// the failures are counted in `/metrics`.
#[test]
fn one_failing_site_does_not_stop_the_others() {
    let env = Env::new("");
    env.add_site("broken.example");
    env.add_site("example.com");
    for (site, seed) in [("broken.example", "10"), ("example.com", "11")] {
        env.tally(&[
            "demo", "--site", site, "--events", "1000", "--days", "3", "--seed", seed,
        ]);
    }
    let (broken, id) = (
        site_id(&env, "broken.example"),
        site_id(&env, "example.com"),
    );
    let server = env.start();
    wait_built(&env, &server, id, &[broken, id]);
    drop(server);
    let dir = env.data_dir().join("columns").join(broken.to_string());
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, "not a directory").unwrap();
    // example.com's store to build again, after broken.example's.
    std::fs::remove_dir_all(env.data_dir().join("columns").join(id.to_string())).unwrap();
    assert!(broken < id);
    let server = env.start();
    let deadline = Instant::now() + Duration::from_secs(60);
    while store_days(&env, id) != complete_days(&env, id) {
        assert!(Instant::now() < deadline, "{:?}", store_days(&env, id));
        std::thread::sleep(Duration::from_millis(50));
    }
    let metrics = server.get("/metrics", &[]).body;
    let errors = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tally_column_seal_errors_total "))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(errors.parse::<f64>().unwrap() >= 1.0, "{errors}");
}

/// The Stats API and dashboard queries the routing test asks, over
/// `range` (`FROM,TO` local dates) and, for the last ones, a range that
/// reaches today (read from the other engines).
fn filtered_queries(range: &str) -> Vec<String> {
    let site = "site_id=example.com";
    let custom = format!("period=custom&date={range}");
    let mut q = Vec::new();
    for filters in [
        "visit:source==Google",
        "event:page==/blog**",
        "visit:browser==Chrome;event:page!=/pricing",
        "event:props:plan==pro",
        "event:goal==Signup",
    ] {
        let f = common::urlencode(filters);
        q.push(format!(
            "/api/v1/stats/aggregate?{site}&{custom}&filters={f}\
             &metrics=visitors,visits,pageviews,events,bounce_rate,visit_duration,views_per_visit\
             &compare=previous_period"
        ));
        q.push(format!(
            "/api/v1/stats/timeseries?{site}&{custom}&filters={f}&interval=date\
             &metrics=visitors,visits,pageviews,bounce_rate,visit_duration"
        ));
        for property in [
            "event:page",
            "visit:source",
            "visit:entry_page",
            "visit:exit_page",
            "visit:country",
            "event:props:plan",
            "event:name",
        ] {
            let metrics = if property.starts_with("visit:") {
                "visitors,visits,pageviews,bounce_rate,visit_duration"
            } else if property == "event:name" {
                "visitors,visits,events"
            } else {
                "visitors,visits,pageviews"
            };
            q.push(format!(
                "/api/v1/stats/breakdown?{site}&{custom}&filters={f}&property={property}\
                 &metrics={metrics}&limit=7&page=2"
            ));
            q.push(format!(
                "/api/v1/stats/breakdown?{site}&{custom}&filters={f}&property={property}\
                 &metrics=visitors&limit=100"
            ));
        }
    }
    // Goals' conversions, and the visits of a property without filters.
    q.push(format!(
        "/api/v1/stats/breakdown?{site}&{custom}&property=event:goal&metrics=visitors,events,conversion_rate&filters={}",
        common::urlencode("visit:source==Google")
    ));
    q.push(format!(
        "/api/v1/stats/aggregate?{site}&{custom}&metrics=visitors,conversion_rate&filters={}",
        common::urlencode("visit:browser==Chrome")
    ));
    q.push(format!(
        "/api/v1/stats/breakdown?{site}&{custom}&property=event:props:plan&metrics=visitors,visits"
    ));
    q
}

#[test]
fn filtered_reports_over_sealed_days_are_answered_by_the_store_as_by_the_raw_tables() {
    let env = Env::new("");
    env.add_site("example.com");
    env.tally(&["goal", "add", "example.com", "--event", "Signup"]);
    env.tally(&[
        "demo",
        "--site",
        "example.com",
        "--events",
        "8000",
        "--days",
        "12",
        "--seed",
        "5",
    ]);
    let key = env.api_key();
    let id = site_id(&env, "example.com");
    // Days that end before yesterday: sealed whatever the hour (UTC site).
    let today = now().div_euclid(DAY);
    let date = |day: i64| {
        chrono::DateTime::from_timestamp(day * DAY, 0)
            .unwrap()
            .format("%Y-%m-%d")
            .to_string()
    };
    let sealed_range = format!("{},{}", date(today - 8), date(today - 2));
    let open_range = format!("{},{}", date(today - 8), date(today));
    let mut queries = filtered_queries(&sealed_range);
    let reaching_today = filtered_queries(&open_range);
    // Ranges reaching today: totals and series join the store's part with
    // today's; breakdowns are read from the other engines.
    queries.extend(reaching_today.iter().cloned());

    // The answers of the raw tables (and recent traffic): a server whose
    // column store cannot be opened (its directory is a file).
    std::fs::write(env.data_dir().join("columns"), b"not a directory").unwrap();
    let server = env.start();
    let raw: Vec<String> = queries
        .iter()
        .map(|q| {
            let r = server.stats(&key, q);
            assert_eq!(r.status, 200, "{q}: {}", r.body);
            r.body
        })
        .collect();
    assert_eq!(column_answers(&server), 0);
    assert_eq!(server.terminate(), 0);

    std::fs::remove_file(env.data_dir().join("columns")).unwrap();
    let server = env.start();
    wait_built(&env, &server, id, &[id]);
    let before = column_answers(&server);
    for (q, want) in queries.iter().zip(&raw) {
        let r = server.stats(&key, q);
        assert_eq!(r.status, 200, "{q}: {}", r.body);
        let (got, want): (serde_json::Value, serde_json::Value) = (
            serde_json::from_str(&r.body).unwrap(),
            serde_json::from_str(want).unwrap(),
        );
        assert_eq!(got, want, "{q}");
    }
    // Every query over sealed days was answered by the store (a report has
    // parts: a total and its comparison, a series, a breakdown).
    let answered = column_answers(&server) - before;
    let sealed_queries = filtered_queries(&sealed_range).len() as u64;
    assert!(
        answered >= sealed_queries,
        "the store answered {answered} parts of {sealed_queries} queries over sealed days"
    );
}

/// A visit that starts on the newest sealed day and reaches a filtered page
/// only after its midnight counts in that day's visit metrics, as the raw
/// tables count it (they look a day past a range's end for a visit's
/// matching event); the store, which does not hold that day yet, must not
/// answer it.
#[test]
fn a_visit_matching_only_after_the_newest_sealed_day_is_counted() {
    // Recent traffic never holds these ranges, so the store answers (or the
    // raw tables, where it cannot).
    let env = Env::with_storage("", "recent_days = 1");
    env.add_site("example.com");
    env.tally(&["goal", "add", "example.com", "--page", "/b"]);
    let key = env.api_key();
    let id = site_id(&env, "example.com");
    // The newest complete day: the one after it is not sealed yet.
    let n = (now() - SEAL_AFTER).div_euclid(DAY) - 1;
    let (started, after_midnight) = ((n + 1) * DAY - 600, (n + 1) * DAY + 600);
    {
        let conn = env.db();
        // One visit inside day n, one from 23:50 to 00:10 the next day that
        // sees /b only after midnight, and one that has gone on since noon
        // two days before (a page reloading itself every few minutes).
        let long = (n - 2) * DAY + 43_200;
        for (visit, visitor, start, end, exit, pageviews, source) in [
            (1, 10, n * DAY + 3600, n * DAY + 3660, "/a", 2, "Google"),
            (2, 20, started, after_midnight, "/b", 2, "Google"),
            (3, 30, long, (n + 1) * DAY + 300, "/b", 4, "Long"),
            // Visitor 50 sees /d at noon, comes back at 23:50 and sees /d
            // again after midnight: one visitor id all day.
            (5, 50, n * DAY + 43_200, n * DAY + 43_200, "/d", 1, "Back"),
            (6, 50, started, after_midnight, "/d", 2, "Back"),
            // Started the evening before day n, crossing both midnights.
            (7, 70, n * DAY - 10_800, after_midnight, "/c", 3, "Early"),
        ] {
            conn.execute(
                "INSERT INTO visits (id, site_id, visitor_id, seq, started_at, last_seen_at,
                    entry_page, exit_page, pageviews, events, interactive, is_bounce, source)
                 VALUES (?1, ?2, ?3, 1, ?4, ?5, '/a', ?6, ?7, ?7, 1, ?9, ?8)",
                rusqlite::params![
                    visit,
                    id,
                    visitor,
                    start,
                    end,
                    exit,
                    pageviews,
                    source,
                    pageviews == 1
                ],
            )
            .unwrap();
        }
        // Properties: visitor 20's crossing visit has plan=pro on both
        // sides of midnight, visitor 50 plan=free in both their visits.
        let (pro, free) = (Some(r#"{"plan":"pro"}"#), Some(r#"{"plan":"free"}"#));
        for (event, visit, visitor, ts, path, props) in [
            (900_001, 1, 10, n * DAY + 3600, "/a", None),
            (900_002, 1, 10, n * DAY + 3660, "/a", pro),
            (900_003, 2, 20, started, "/a", pro),
            (900_004, 2, 20, after_midnight, "/b", pro),
            (900_005, 3, 30, long, "/a", None),
            (900_006, 3, 30, long + DAY, "/a", None),
            (900_007, 3, 30, long + 2 * DAY, "/a", free),
            (900_008, 3, 30, (n + 1) * DAY + 300, "/b", None),
            (900_009, 5, 50, n * DAY + 43_200, "/d", free),
            (900_010, 6, 50, started, "/e", None),
            (900_011, 6, 50, after_midnight, "/d", free),
            (900_012, 7, 70, n * DAY - 10_800, "/c", None),
            (900_013, 7, 70, n * DAY + 3600, "/c", pro),
            (900_014, 7, 70, after_midnight, "/c", free),
        ] {
            conn.execute(
                "INSERT INTO events (site_id, ts, id, visit_id, visitor_id, name, hostname, path,
                    props)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pageview', 'example.com', ?6, ?7)",
                rusqlite::params![id, ts, event, visit, visitor, path, props],
            )
            .unwrap();
        }
    }
    let server = env.start();
    assert_eq!(
        wait_built(&env, &server, id, &[id]),
        BTreeSet::from([n - 2, n - 1, n])
    );
    let date = chrono::DateTime::from_timestamp(n * DAY, 0)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string();
    let q = |what: &str| {
        let r = server.stats(
            &key,
            &format!(
                "/api/v1/stats/{what}&site_id=example.com&period=custom&date={date},{date}&filters={}",
                common::urlencode("event:page==/b")
            ),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["results"].clone()
    };
    let totals = q("aggregate?metrics=visits,visit_duration");
    assert_eq!(totals["visits"]["value"], 1, "{totals}");
    assert_eq!(totals["visit_duration"]["value"], 1200, "{totals}");
    let entry = q("breakdown?property=visit:entry_page&metrics=visits");
    assert_eq!(
        entry,
        serde_json::json!([{"entry_page": "/a", "visits": 1}])
    );
    // Without an event filter the store holds the day's visits whole.
    let r = server.stats(
        &key,
        &format!(
            "/api/v1/stats/aggregate?site_id=example.com&period=custom&date={date},{date}\
             &metrics=visits&filters={}",
            common::urlencode("visit:source==Google")
        ),
    );
    assert_eq!(r.json()["results"]["visits"]["value"], 2, "{}", r.body);

    // Over day n and the next, which the store does not hold yet, the
    // store's part and the next day's are joined as the raw tables count:
    // visitor 20 counts once though their crossing visit matches on both
    // sides, and the visit that matches only after midnight counts.
    let day = |d: i64| {
        chrono::DateTime::from_timestamp(d * DAY, 0)
            .unwrap()
            .format("%Y-%m-%d")
            .to_string()
    };
    let before = column_answers(&server);
    let joined = |from: i64, filters: &str| {
        let r = server.stats(
            &key,
            &format!(
                "/api/v1/stats/aggregate?site_id=example.com&period=custom&date={},{}\
                 &metrics=visitors,visits,pageviews,visit_duration,bounce_rate,conversion_rate\
                 &filters={}",
                day(from),
                day(n + 1),
                common::urlencode(filters)
            ),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let t = &r.json()["results"];
        let v = |m: &str| t[m]["value"].as_f64().unwrap_or(-1.0);
        [
            v("visitors"),
            v("visits"),
            v("pageviews"),
            v("visit_duration"),
            v("bounce_rate"),
            v("conversion_rate"),
        ]
    };
    // Visitor 20 counts once though their crossing visit matches on both
    // sides; the /b goal is theirs only.
    assert_eq!(
        joined(n, "visit:source==Google"),
        [2.0, 2.0, 4.0, 630.0, 0.0, 50.0]
    );
    // Only after midnight: visit 2 counts (its duration too), visit 3
    // started before the range.
    assert_eq!(
        joined(n, "event:page==/b"),
        [2.0, 1.0, 2.0, 1200.0, 0.0, 100.0]
    );
    // Visit 3's noon view of /a on day n counts its visitor, not its visit
    // (it started before the range); no /a view is a /b conversion.
    assert_eq!(
        joined(n, "event:page==/a"),
        [3.0, 2.0, 4.0, 630.0, 0.0, 0.0]
    );
    // Visitor 50's id is the same in both their visits of day n: one
    // visitor; the visit that sees /d only after midnight counts.
    assert_eq!(
        joined(n, "event:page==/d"),
        [1.0, 2.0, 2.0, 600.0, 50.0, 0.0]
    );
    // A visit started before the range that crosses the seam: its visitor
    // counts once, its visit not at all (it started before the range).
    assert_eq!(joined(n, "event:page==/c")[..3], [1.0, 0.0, 2.0]);
    // The long visit, from two days before: one visitor, one visit.
    let long_duration = ((n + 1) * DAY + 300 - ((n - 2) * DAY + 43_200)) as f64;
    assert_eq!(
        joined(n - 2, "visit:source==Long"),
        [1.0, 1.0, 4.0, long_duration, 0.0, 100.0]
    );
    assert_eq!(
        joined(n - 2, "visit:source==Long;event:page==/b"),
        [1.0, 1.0, 1.0, long_duration, 0.0, 100.0]
    );
    // Each query's total, comparison and goal parts came from the store.
    assert!(column_answers(&server) - before >= 5);

    // Breakdowns over the same ranges: the store's part ranked with the
    // next day's, as the raw tables rank them (a server whose store cannot
    // open answers from them).
    let mut breakdowns = Vec::new();
    for from in [n, n - 2] {
        for filters in [
            "visit:source==Google",
            "event:page==/a",
            "event:page==/b",
            "event:page==/d",
            "event:page==/c",
            "visit:source==Long;event:page==/b",
            "event:props:plan==pro",
            "event:page!=/e",
        ] {
            for (property, metrics) in [
                ("event:page", "visitors,visits,pageviews"),
                ("event:props:plan", "visitors,visits,pageviews"),
                (
                    "visit:source",
                    "visitors,visits,pageviews,bounce_rate,visit_duration",
                ),
                ("visit:entry_page", "visitors,visits,visit_duration"),
                ("visit:exit_page", "visitors,visits"),
            ] {
                for page in ["&limit=100", "&limit=1&page=2"] {
                    breakdowns.push(format!(
                        "/api/v1/stats/breakdown?site_id=example.com&period=custom&date={},{}\
                         &property={property}&metrics={metrics}&filters={}{page}",
                        day(from),
                        day(n + 1),
                        common::urlencode(filters)
                    ));
                }
            }
        }
    }
    let before = column_answers(&server);
    let joined: Vec<serde_json::Value> = breakdowns
        .iter()
        .map(|q| {
            let r = server.stats(&key, q);
            assert_eq!(r.status, 200, "{q}: {}", r.body);
            r.json()["results"].clone()
        })
        .collect();
    assert!(
        column_answers(&server) - before >= breakdowns.len() as u64,
        "every breakdown is joined at the seam"
    );
    assert_eq!(server.terminate(), 0);
    std::fs::remove_dir_all(env.data_dir().join("columns")).unwrap();
    std::fs::write(env.data_dir().join("columns"), b"not a directory").unwrap();
    let server = env.start();
    for (q, joined) in breakdowns.iter().zip(&joined) {
        let r = server.stats(&key, q);
        assert_eq!(r.status, 200, "{q}: {}", r.body);
        assert_eq!(joined, &r.json()["results"], "{q}");
    }
    // Counted by hand: visitor 20's plan=pro on both sides is one visitor
    // and one visit, as is visitor 70's; visitor 50's plan=free in two
    // visits of one day is one visitor.
    assert_eq!(
        joined[breakdowns
            .iter()
            .position(|q| q.contains("props:plan&")
                && q.contains("page%21%3D%2Fe")
                && q.contains("limit=100")
                && q.contains(&day(n - 2)))
            .unwrap()],
        serde_json::json!([
            {"plan": "free", "visitors": 3, "visits": 4, "pageviews": 4},
            {"plan": "pro", "visitors": 3, "visits": 3, "pageviews": 4},
        ])
    );
}
