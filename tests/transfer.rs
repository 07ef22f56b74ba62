//! `tally export` and `tally import`: Tally's CSV round trip gives the same
//! reports in another instance; GoatCounter's export imports as visits;
//! overlapping or concurrent imports are refused.

mod common;

use common::*;
use serde_json::{Value, json};

/// `tally import --format FORMAT --site example.com PATH`.
fn import(env: &Env, format: &str, path: &str) -> std::process::Output {
    env.tally_raw(&["import", "--format", format, "--site", "example.com", path])
}

/// Like [`import`], which must succeed; its standard output.
fn imported(env: &Env, format: &str, path: &str) -> String {
    let out = import(env, format, path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn send(s: &Server, ip: &str, ua: &str, body: Value) {
    assert_eq!(
        s.event_from(ip, &body.to_string(), ua).status,
        202,
        "{body}"
    );
}

/// The numbers a dashboard shows for today: totals and a few breakdowns.
fn report(s: &Server, key: &str, period: &str) -> Value {
    let q = |path: &str| -> Value {
        let r = s.stats(
            key,
            &format!("/api/v1/stats/{path}&site_id=example.com&{period}"),
        );
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        r.json()["results"].clone()
    };
    json!({
        "totals": q("aggregate?metrics=visitors,visits,pageviews,events,bounce_rate,visit_duration"),
        "pages": q("breakdown?property=event:page&metrics=visitors,pageviews"),
        "sources": q("breakdown?property=visit:source&metrics=visitors,visits"),
        "campaigns": q("breakdown?property=visit:utm_campaign&metrics=visitors"),
        "browsers": q("breakdown?property=visit:browser&metrics=visitors"),
        "events": q("breakdown?property=event:name&metrics=visitors,events"),
        "plans": q("breakdown?property=event:props:plan&metrics=visitors,events"),
    })
}

#[test]
fn tally_csv_round_trip_gives_the_same_reports() {
    let a = Env::new("trusted_proxies = [\"127.0.0.1/32\"]\n");
    a.add_site("example.com");
    let key = a.api_key();
    let s = a.start();
    let page = |path: &str| json!({"n": "pageview", "u": format!("https://example.com{path}"), "d": "example.com"});
    let mut first = page("/?utm_source=news&utm_campaign=spring");
    first["r"] = json!("https://www.google.com/");
    send(&s, "10.0.0.1", CHROME, first);
    send(&s, "10.0.0.1", CHROME, page("/pricing"));
    send(
        &s,
        "10.0.0.1",
        CHROME,
        json!({"n": "Signup", "u": "https://example.com/pricing", "d": "example.com",
               "p": {"plan": "pro"}, "$": {"amount": "12.5", "currency": "EUR"}}),
    );
    send(&s, "10.0.0.2", FIREFOX, page("/blog/a"));
    send(
        &s,
        "10.0.0.3",
        FIREFOX,
        json!({"n": "=HYPERLINK(\"x\")", "u": "https://example.com/", "d": "example.com"}),
    );
    s.settle();
    let before = report(&s, &key, "period=day");
    drop(s);

    let csv = a.dir.path().join("events.csv");
    a.tally(&["export", "example.com", "--out", csv.to_str().unwrap()]);
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(
        text.starts_with("time,name,hostname,path,visit,visitor,"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1 + 5, "{text}");
    assert!(text.contains("'=HYPERLINK"), "formulas are defused: {text}");
    assert!(!text.contains("10.0.0."), "no addresses: {text}");
    // Refuses to overwrite.
    let again = a.tally_raw(&["export", "example.com", "--out", csv.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(2));

    let b = Env::new("");
    b.add_site("example.com");
    let out = imported(&b, "tally-csv", csv.to_str().unwrap());
    assert!(out.contains("Imported 5 events in 3 visits"), "{out}");
    let key_b = b.api_key();
    let s = b.start();
    s.settle();
    assert_eq!(report(&s, &key_b, "period=day"), before);
    // The imported range is taken: a second import is refused, nothing changes.
    drop(s);
    let twice = import(&b, "tally-csv", csv.to_str().unwrap());
    assert_eq!(twice.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&twice.stderr).contains("already has 5 events"));
    assert_eq!(b.count("SELECT COUNT(*) FROM events"), 5);
    // Exporting again gives the same rows but for the visit and visitor
    // numbers (stored visitor ids are derived from the file's per day).
    let csv_b = b.dir.path().join("again.csv");
    b.tally(&["export", "example.com", "--out", csv_b.to_str().unwrap()]);
    let strip_visit = |t: &str| -> Vec<String> {
        let mut rows: Vec<String> = t
            .lines()
            .map(|l| {
                let mut cells: Vec<&str> = l.split(',').collect();
                cells.drain(4..6);
                cells.join(",")
            })
            .collect();
        rows.sort();
        rows
    };
    assert_eq!(
        strip_visit(&std::fs::read_to_string(&csv_b).unwrap()),
        strip_visit(&text)
    );
}

#[test]
fn goatcounter_export_imports_as_visits() {
    let env = Env::new("");
    env.add_site("example.com");
    let key = env.api_key();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/goatcounter-export.csv"
    );
    // Gzipped, as GoatCounter sends it.
    let gz = env.dir.path().join("export.csv.gz");
    {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz).unwrap(),
            flate2::Compression::default(),
        );
        enc.write_all(&std::fs::read(fixture).unwrap()).unwrap();
        enc.finish().unwrap();
    }
    let out = imported(&env, "goatcounter-csv", gz.to_str().unwrap());
    // The bot row is skipped; session a1 has a two-hour gap: two visits.
    assert!(out.contains("Imported 5 events in 3 visits"), "{out}");
    let s = env.start();
    let period = "period=custom&date=2025-03-10,2025-03-11";
    let results = report(&s, &key, period);
    let totals = &results["totals"];
    assert_eq!(totals["pageviews"]["value"], 4, "{results}");
    assert_eq!(totals["visits"]["value"], 3, "{results}");
    assert_eq!(totals["visitors"]["value"], 2, "{results}");
    assert_eq!(totals["events"]["value"], 1, "{results}");
    let sources: Vec<&str> = results["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["source"].as_str().unwrap())
        .collect();
    assert!(sources.contains(&"Hacker News"), "{results}");
    assert!(sources.contains(&"newsletter"), "{results}");
    assert_eq!(results["events"][0]["name"], "signup-click", "{results}");
    let r = s.stats(
        &key,
        &format!("/api/v1/stats/breakdown?site_id=example.com&{period}&property=visit:country"),
    );
    let countries = r.json()["results"].clone();
    assert!(countries.to_string().contains("\"NL\""), "{countries}");
    let r = s.stats(
        &key,
        &format!("/api/v1/stats/breakdown?site_id=example.com&{period}&property=visit:device"),
    );
    assert!(
        r.body.contains("Mobile") && r.body.contains("Desktop"),
        "{}",
        r.body
    );

    // Not while a server runs.
    let busy = import(&env, "goatcounter-csv", fixture);
    assert_eq!(busy.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&busy.stderr).contains("a server is running"));
}

/// A visitor of the file counts once a day, as Tally's own visitors do
/// (their ids change with the daily salt), and properties are stored as
/// strings, as ingest stores them.
#[test]
fn an_imported_visitor_counts_once_a_day_and_properties_are_strings() {
    let env = Env::new("");
    env.add_site("example.com");
    let key = env.api_key();
    let csv = env.dir.path().join("events.csv");
    let mut text = COLUMNS_HEADER.to_string();
    let row = |time: &str, visit: i64, visitor: i64, props: &str| {
        let mut cells = vec![String::new(); 27];
        cells[0] = time.into();
        cells[1] = if props.is_empty() {
            "pageview"
        } else {
            "Signup"
        }
        .into();
        cells[2] = "example.com".into();
        cells[3] = "/".into();
        cells[4] = visit.to_string();
        cells[5] = visitor.to_string();
        cells[6] = "1".into();
        cells[7] = props.into();
        format!("\n{}", cells.join(","))
    };
    // Visitor 7 on the 1st and the 5th; visitor 8 twice on the 1st.
    text += &row("2025-03-01T10:00:00Z", 1, 7, "");
    text += &row("2025-03-05T10:00:00Z", 2, 7, "");
    text += &row("2025-03-01T11:00:00Z", 3, 8, "");
    text += &row("2025-03-01T15:00:00Z", 4, 8, "");
    text += &row(
        "2025-03-01T15:01:00Z",
        4,
        8,
        r#""{""plan"":""pro"",""seats"":3,""trial"":true,""gone"":null}""#,
    );
    std::fs::write(&csv, text + "\n").unwrap();
    let out = imported(&env, "tally-csv", csv.to_str().unwrap());
    assert!(out.contains("Imported 5 events in 4 visits"), "{out}");
    let props: String = env
        .db()
        .query_row(
            "SELECT props FROM events WHERE props IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(props, r#"{"plan":"pro","seats":"3","trial":"true"}"#);
    let s = env.start();
    let t = report(&s, &key, "period=custom&date=2025-03-01,2025-03-07");
    assert_eq!(t["totals"]["visitors"]["value"], 3, "{t}");
    assert_eq!(t["totals"]["visits"]["value"], 4, "{t}");
    let day = report(&s, &key, "period=day&date=2025-03-01");
    assert_eq!(day["totals"]["visitors"]["value"], 2, "{day}");
}

/// Tally's CSV header.
const COLUMNS_HEADER: &str = "time,name,hostname,path,visit,visitor,interactive,props,\
    revenue_amount,revenue_currency,scroll_depth,engaged_ms,referrer,source,utm_medium,\
    utm_source,utm_campaign,utm_term,utm_content,country,region,city,browser,\
    browser_version,os,os_version,device";

#[test]
fn a_broken_file_is_refused_and_changes_nothing() {
    let env = Env::new("");
    env.add_site("example.com");
    let bad = env.dir.path().join("bad.csv");
    std::fs::write(&bad, "time,name\n2025-01-01T00:00:00Z,pageview\n").unwrap();
    let out = import(&env, "tally-csv", bad.to_str().unwrap());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no column \"hostname\""));
    let out = import(&env, "goatcounter-csv", bad.to_str().unwrap());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a GoatCounter export"));
    assert_eq!(env.count("SELECT COUNT(*) FROM events"), 0);
}

#[test]
fn plausible_export_imports_as_daily_aggregates_that_survive_a_rebuild() {
    let env = Env::new("");
    env.add_site("example.com");
    let key = env.api_key();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/plausible");
    let out = imported(&env, "plausible-csv", dir);
    assert!(
        out.contains("daily aggregate rows into example.com"),
        "{out}"
    );
    // No raw events: only aggregates.
    assert_eq!(env.count("SELECT COUNT(*) FROM events"), 0);
    let again = import(&env, "plausible-csv", dir);
    assert_eq!(
        again.status.code(),
        Some(2),
        "a second import of the same days is refused"
    );

    let period = "period=custom&date=2025-03-01,2025-03-02";
    let check = |s: &Server| {
        let results = report(s, &key, period);
        let t = &results["totals"];
        assert_eq!(t["visitors"]["value"], 30, "{results}");
        assert_eq!(t["visits"]["value"], 34, "{results}");
        assert_eq!(t["pageviews"]["value"], 65, "{results}");
        assert_eq!(t["bounce_rate"]["value"], 41, "{results}");
        assert_eq!(t["visit_duration"]["value"], 44, "{results}");
        assert_eq!(
            results["sources"],
            json!([
                {"source": "Google", "visitors": 18, "visits": 20},
                {"source": "Newsletter", "visitors": 8, "visits": 9},
                {"source": "Direct / None", "visitors": 4, "visits": 5},
            ]),
            "{results}"
        );
        assert_eq!(
            results["pages"][0],
            json!({"page": "/", "visitors": 22, "pageviews": 45})
        );
        assert_eq!(
            results["browsers"][0],
            json!({"browser": "Chrome", "visitors": 20})
        );
        assert_eq!(
            results["events"],
            json!([{"name": "Signup", "visitors": 3, "events": 4}])
        );
        assert_eq!(
            results["campaigns"],
            json!([{"utm_campaign": "(none)", "visitors": 22}, {"utm_campaign": "spring", "visitors": 8}])
        );
        let r = s.stats(
            &key,
            &format!("/api/v1/stats/breakdown?site_id=example.com&{period}&property=visit:country"),
        );
        assert!(
            r.body.contains("\"country\":\"DE\",\"visitors\":20"),
            "{}",
            r.body
        );
        // A single day reads that day's row.
        let day = s.stats(
            &key,
            "/api/v1/stats/aggregate?site_id=example.com&period=day&date=2025-03-01&metrics=visitors",
        );
        assert_eq!(
            day.json()["results"]["visitors"]["value"],
            10,
            "{}",
            day.body
        );
    };
    let s = env.start();
    check(&s);
    drop(s);
    // A rebuild from the raw tables (after a timezone change, a migration)
    // adds the imported numbers back.
    env.db()
        .execute(
            "INSERT INTO meta (key, value) VALUES ('rollups_rebuild', '1')",
            [],
        )
        .unwrap();
    let s = env.start_rebuilding();
    assert_eq!(
        env.count("SELECT COUNT(*) FROM meta WHERE key = 'rollups_rebuild'"),
        0
    );
    check(&s);
}
