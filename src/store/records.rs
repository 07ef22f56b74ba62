//! Plain records the store writes and reads back.

use std::sync::Arc;

/// Attributes fixed when a visit starts: where the visitor came from and with what.
#[derive(Debug, Clone, Default, PartialEq)]
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
#[derive(Debug, Clone)]
pub struct NewEvent {
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
}
