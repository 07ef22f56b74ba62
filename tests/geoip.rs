//! Location enrichment with real GeoIP databases: MaxMind's test databases
//! (GeoIP2 layout) and DB-IP's lite country file (flat layout). They are
//! fetched by `scripts/fetch-geoip-testdata` into `target/testdata`; under CI a
//! missing file fails the test, locally it is skipped with a message.

mod common;

use std::path::PathBuf;

use common::*;

fn testdata(name: &str) -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/testdata")
        .join(name);
    if p.is_file() {
        return Some(p);
    }
    if std::env::var_os("CI").is_some() {
        panic!("{} missing: run scripts/fetch-geoip-testdata", p.display());
    }
    eprintln!(
        "SKIPPED: {} missing; run scripts/fetch-geoip-testdata",
        p.display()
    );
    None
}

fn location_of(db: &std::path::Path, ip: &str) -> (Option<String>, Option<String>, Option<String>) {
    let env = Env::new(&format!(
        "trusted_proxies = [\"127.0.0.1/32\"]\n[geoip]\ndatabase = {:?}\n",
        db.display().to_string()
    ));
    env.add_site("example.com");
    let s = env.start();
    let r = s.event_from(ip, &pageview("https://example.com/"), CHROME);
    assert_eq!(r.status, 202);
    drop(s);
    env.db()
        .query_row("SELECT country, region, city FROM visits", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap()
}

#[test]
fn maxmind_city_layout() {
    let Some(db) = testdata("GeoIP2-City-Test.mmdb") else {
        return;
    };
    // An address of MaxMind's test data: London, England.
    let (country, region, city) = location_of(&db, "81.2.69.142");
    assert_eq!(country.as_deref(), Some("GB"));
    assert_eq!(region.as_deref(), Some("England"));
    assert_eq!(city.as_deref(), Some("London"));
}

#[test]
fn maxmind_country_layout() {
    let Some(db) = testdata("GeoLite2-Country-Test.mmdb") else {
        return;
    };
    let (country, _, city) = location_of(&db, "81.2.69.160");
    assert_eq!(country.as_deref(), Some("GB"));
    assert_eq!(city, None);
}

#[test]
fn dbip_flat_layout() {
    let Some(db) = testdata("dbip-country.mmdb") else {
        return;
    };
    let (country, _, _) = location_of(&db, "8.8.8.8");
    assert_eq!(country.as_deref(), Some("US"));
}

#[test]
fn unknown_address_has_no_location() {
    let Some(db) = testdata("GeoIP2-City-Test.mmdb") else {
        return;
    };
    assert_eq!(location_of(&db, "10.1.2.3"), (None, None, None));
}
