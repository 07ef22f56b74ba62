//! Rates of a period or bucket without visits are null (Plausible's
//! answer), not 0, which charts and clients would read as a real 0%; counts
//! stay 0. From every source: rollups, recent traffic in memory, raw tables.

mod common;

use common::*;
use serde_json::{Value, json};

const RATES: &[&str] = &["bounce_rate", "visit_duration", "views_per_visit"];
const COUNTS: &[&str] = &["visitors", "visits", "pageviews"];
const METRICS: &str = "visitors,visits,pageviews,bounce_rate,visit_duration,views_per_visit";

fn yesterday() -> String {
    (chrono::Utc::now().date_naive() - chrono::Days::new(1)).to_string()
}

/// A bucket or period without visits: counts 0, rates null.
fn assert_empty(row: &Value, value: impl Fn(&Value, &str) -> Value, what: &str) {
    for m in COUNTS {
        assert_eq!(value(row, m), json!(0), "{m} of {what}: {row}");
    }
    for m in RATES {
        assert_eq!(value(row, m), Value::Null, "{m} of {what}: {row}");
    }
}

fn assert_visited(row: &Value, value: impl Fn(&Value, &str) -> Value, what: &str) {
    for m in COUNTS.iter().chain(RATES) {
        assert!(value(row, m).is_number(), "{m} of {what}: {row}");
    }
}

#[test]
fn rates_without_visits_are_null_from_every_source() {
    // recent_days = 0 holds no recent traffic: filtered reports read the
    // raw tables. The other server reads them from memory.
    for recent in ["", "recent_days = 0"] {
        let env = Env::with_storage("", recent);
        let (s, key) = env.start_with_one_pageview();
        let yesterday = yesterday();
        for filter in ["", "&filters=event:page==/"] {
            let source = if filter.is_empty() { "rollups" } else { "raw" };
            let get = |q: &str| {
                let r = s.stats(&key, &format!("/api/v1/stats/{q}{filter}"));
                assert_eq!(r.status, 200, "{q}: {}", r.body);
                r.json()
            };
            let value = |r: &Value, m: &str| r[m]["value"].clone();

            let empty = get(&format!(
                "aggregate?site_id=example.com&period=day&date={yesterday}&metrics={METRICS}"
            ));
            assert_empty(
                &empty["results"],
                value,
                &format!("an empty day ({source})"),
            );

            let today = get(&format!(
                "aggregate?site_id=example.com&period=day&metrics={METRICS}&compare=previous_period"
            ));
            let today = &today["results"];
            assert_visited(today, value, &format!("today ({source})"));
            // Against nothing: counts rose by 100%, rates have no change.
            assert_eq!(today["visitors"]["change"], 100, "{today}");
            for m in RATES {
                assert_eq!(today[m]["change"], Value::Null, "{m} ({source}): {today}");
            }

            let series = get(&format!(
                "timeseries?site_id=example.com&period=7d&metrics={METRICS}"
            ));
            let rows = series["results"].as_array().unwrap();
            assert_eq!(rows.len(), 7);
            let field = |r: &Value, m: &str| r[m].clone();
            for row in &rows[..6] {
                assert_empty(row, field, &format!("an empty bucket ({source})"));
            }
            assert_visited(&rows[6], field, &format!("today's bucket ({source})"));

            let hours = get(&format!(
                "timeseries?site_id=example.com&period=day&date={yesterday}&metrics={METRICS}"
            ));
            for row in hours["results"].as_array().unwrap() {
                assert_empty(row, field, &format!("an empty hour ({source})"));
            }
        }

        // The dashboard shows a dash for them, and charts no point there.
        let page = s.get(&format!("/example.com?period=day&date={yesterday}"), &[]);
        assert_eq!(page.status, 200);
        assert_eq!(
            page.body
                .matches("<strong class=\"value\">–</strong>")
                .count(),
            3,
            "bounce rate, views per visit and visit duration"
        );
        assert!(!page.body.contains("<strong class=\"value\">0%</strong>"));
        let chart = s.get("/example.com?period=7d&graph=bounce_rate", &[]);
        assert_eq!(chart.status, 200);
        assert_eq!(
            chart.body.matches("<circle").count(),
            1,
            "one day with visits"
        );
    }
}
