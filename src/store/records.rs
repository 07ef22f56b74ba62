//! Plain records the store writes and reads back.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Attributes fixed when a visit starts: where the visitor came from and with what.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VisitDims {
    pub referrer: Option<String>,
    pub source: Option<String>,
    pub utm_medium: Option<String>,
    pub utm_source: Option<String>,
    pub utm_campaign: Option<String>,
    pub utm_term: Option<String>,
    pub utm_content: Option<String>,
    pub country: Option<String>,
    pub region: Option<String>,
    pub city: Option<String>,
    pub browser: Option<String>,
    pub browser_version: Option<String>,
    pub os: Option<String>,
    pub os_version: Option<String>,
    pub device: Option<String>,
}

impl VisitDims {
    /// The attributes as SQL parameters, in the order of the `referrer …
    /// device` columns that `visits` and `events` share.
    pub(super) fn params(&self) -> [&dyn rusqlite::ToSql; 15] {
        [
            &self.referrer,
            &self.source,
            &self.utm_medium,
            &self.utm_source,
            &self.utm_campaign,
            &self.utm_term,
            &self.utm_content,
            &self.country,
            &self.region,
            &self.city,
            &self.browser,
            &self.browser_version,
            &self.os,
            &self.os_version,
            &self.device,
        ]
    }

    /// Reads the attributes from 15 columns starting at `first`, in that order.
    pub(super) fn from_row(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<VisitDims> {
        Ok(VisitDims {
            referrer: r.get(first)?,
            source: r.get(first + 1)?,
            utm_medium: r.get(first + 2)?,
            utm_source: r.get(first + 3)?,
            utm_campaign: r.get(first + 4)?,
            utm_term: r.get(first + 5)?,
            utm_content: r.get(first + 6)?,
            country: r.get(first + 7)?,
            region: r.get(first + 8)?,
            city: r.get(first + 9)?,
            browser: r.get(first + 10)?,
            browser_version: r.get(first + 11)?,
            os: r.get(first + 12)?,
            os_version: r.get(first + 13)?,
            device: r.get(first + 14)?,
        })
    }
}

/// A snapshot of a visit after one of its events. Snapshots of the same visit
/// carry increasing `seq`; the store keeps the one with the highest.
#[derive(Debug, Clone)]
pub struct VisitRecord {
    pub id: i64,
    pub site_id: i64,
    pub visitor_id: i64,
    pub seq: i64,
    pub started_at: i64,
    pub last_seen_at: i64,
    pub entry_page: Option<String>,
    pub exit_page: Option<String>,
    pub pageviews: i64,
    pub events: i64,
    pub interactive: i64,
    pub is_bounce: bool,
    pub dims: Arc<VisitDims>,
}

/// One tracked event. Visit rows are written apart, in batches (see
/// [`super::visits`]); the first event of a visit carries its attributes.
/// Serialized as one record of the event journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewEvent {
    /// Set by the writer when it inserts the event (0 before).
    pub id: i64,
    pub site_id: i64,
    pub visitor_id: i64,
    pub ts: i64,
    pub name: String,
    pub hostname: String,
    pub path: String,
    /// JSON object of string values, or `None` without props.
    pub props: Option<String>,
    pub revenue_amount: Option<String>,
    pub revenue_currency: Option<String>,
    pub scroll_depth: Option<i64>,
    pub engaged_ms: Option<i64>,
    /// False for custom events sent with `interactive: false`.
    pub interactive: bool,
    pub visit_id: i64,
    /// The attributes of the visit this event starts, if it starts one.
    pub first_of_visit: Option<Arc<VisitDims>>,
    /// The first view of this page in its visit, or the first custom event
    /// of this name in it.
    pub first_view: bool,
}

#[cfg(test)]
impl NewEvent {
    /// A pageview of `path` on site 1 that starts visit 1, for tests.
    pub(crate) fn test_pageview(path: &str) -> NewEvent {
        NewEvent {
            id: 0,
            site_id: 1,
            visitor_id: 7,
            ts: 1_700_000_000,
            name: "pageview".into(),
            hostname: "example.com".into(),
            path: path.into(),
            props: None,
            revenue_amount: None,
            revenue_currency: None,
            scroll_depth: None,
            engaged_ms: None,
            interactive: true,
            visit_id: 1,
            first_of_visit: Some(Default::default()),
            first_view: true,
        }
    }
}
