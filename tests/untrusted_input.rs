//! Input from strangers against the real binary: refused with a 4xx naming
//! the field, without panicking a worker or stalling the server.

mod common;

use common::*;

/// Dates at the ends of chrono's calendar, or outside the years reports
/// cover, as the dashboard and the Stats API receive them.
const FAR_DATES: &[&str] = &["%2B262142-12-31", "-262143-01-01", "0000-01-01"];

#[test]
fn far_dates_are_a_400_naming_date_on_the_dashboard_and_the_stats_api() {
    let env = Env::new("");
    env.tally(&["site", "add", "example.com", "--public"]);
    let key = env.api_key();
    let s = env.start();
    assert_eq!(
        s.event(&pageview("https://example.com/"), CHROME).status,
        202
    );
    s.settle();
    for date in FAR_DATES {
        for period in ["day", "7d", "30d", "month", "6mo", "12mo"] {
            for compare in ["", "&compare=previous_period"] {
                let page = s.get(
                    &format!("/example.com?period={period}&date={date}{compare}"),
                    &[],
                );
                assert_eq!(page.status, 400, "{period} {date}: {}", page.body);
                assert!(page.body.contains("date:"), "{}", page.body);
                for report in ["aggregate", "timeseries"] {
                    let api = s.stats(
                        &key,
                        &format!(
                            "/api/v1/stats/{report}?site_id=example.com&period={period}&date={date}{compare}"
                        ),
                    );
                    assert_eq!(api.status, 400, "{report} {period} {date}: {}", api.body);
                    assert!(api.json()["error"].as_str().unwrap().starts_with("date:"));
                }
            }
        }
        let custom = s.stats(
            &key,
            &format!(
                "/api/v1/stats/breakdown?site_id=example.com&property=event:page&period=custom&date=2024-01-01,{date}"
            ),
        );
        assert_eq!(custom.status, 400, "{}", custom.body);
        assert!(custom.body.contains("date:"), "{}", custom.body);
    }
    // The ends of the window are answered, and the server still serves.
    for date in ["1970-01-01", "9999-12-31"] {
        let page = s.get(
            &format!("/example.com?period=12mo&date={date}&compare=previous_period"),
            &[],
        );
        assert_eq!(page.status, 200, "{date}: {}", page.body);
    }
    // So is the widest range, with its previous period as long again.
    let widest = s.stats(
        &key,
        "/api/v1/stats/aggregate?site_id=example.com&period=custom&date=1970-01-01,9999-12-31&compare=previous_period&metrics=pageviews,bounce_rate",
    );
    assert_eq!(widest.status, 200, "{}", widest.body);
    assert_eq!(widest.json()["results"]["pageviews"]["value"], 1);
    let today = s.stats(
        &key,
        "/api/v1/stats/aggregate?site_id=example.com&period=day&metrics=pageviews",
    );
    assert_eq!(today.status, 200, "{}", today.body);
    assert_eq!(today.json()["results"]["pageviews"]["value"], 1);
    assert_eq!(s.get("/example.com", &[]).status, 200);
}
