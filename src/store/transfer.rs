//! Raw traffic in bulk, in and out: every event of a site with its visit's
//! attributes (for `tally export`), and past visits written directly (for
//! `tally import`, which then has the read model rebuild the site's rollups).
//!
//! Imports are written by the caller's connection, not the server's writer:
//! `tally import` holds the data directory's lock, so no server runs beside.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::{Connection, params};

use super::events::insert_event_row;
use super::{NewEvent, StoreError, VisitDims, VisitRecord, visits};

/// What an event says, apart from its visit: the part an export writes and
/// an import reads back.
#[derive(Debug, Clone)]
pub struct EventFields {
    pub ts: i64,
    pub name: String,
    pub hostname: String,
    pub path: String,
    pub interactive: bool,
    pub props: Option<String>,
    pub revenue_amount: Option<String>,
    pub revenue_currency: Option<String>,
    pub scroll_depth: Option<i64>,
    pub engaged_ms: Option<i64>,
}

/// One stored event with its visit's attributes.
#[derive(Debug, Clone)]
pub struct ExportedEvent {
    pub event: EventFields,
    pub visit_id: i64,
    pub visitor_id: i64,
    pub dims: VisitDims,
}

/// Calls `each` with every event of `site_id` from `from` to before `to`
/// (Unix seconds), oldest first, streaming (one read transaction). The
/// visit's attributes come from its row, or from its first event while the
/// row is still a second behind.
pub fn each_event<E>(
    conn: &Connection,
    site_id: i64,
    from: i64,
    to: i64,
    mut each: impl FnMut(ExportedEvent) -> Result<(), E>,
) -> Result<Result<u64, E>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT e.ts, e.name, e.hostname, e.path, e.visit_id, e.visitor_id, e.interactive,
            e.props, e.revenue_amount, e.revenue_currency, e.scroll_depth, e.engaged_ms,
            COALESCE(v.referrer, e.referrer),
            COALESCE(v.source, e.source),
            COALESCE(v.utm_medium, e.utm_medium),
            COALESCE(v.utm_source, e.utm_source),
            COALESCE(v.utm_campaign, e.utm_campaign),
            COALESCE(v.utm_term, e.utm_term),
            COALESCE(v.utm_content, e.utm_content),
            COALESCE(v.country, e.country),
            COALESCE(v.region, e.region),
            COALESCE(v.city, e.city),
            COALESCE(v.browser, e.browser),
            COALESCE(v.browser_version, e.browser_version),
            COALESCE(v.os, e.os),
            COALESCE(v.os_version, e.os_version),
            COALESCE(v.device, e.device)
         FROM events AS e LEFT JOIN visits AS v ON v.id = e.visit_id
         WHERE e.site_id = ?1 AND e.ts >= ?2 AND e.ts < ?3
         ORDER BY e.ts, e.id",
    )?;
    let mut rows = stmt.query(params![site_id, from, to])?;
    let mut n = 0;
    while let Some(r) = rows.next()? {
        let event = ExportedEvent {
            event: EventFields {
                ts: r.get(0)?,
                name: r.get(1)?,
                hostname: r.get(2)?,
                path: r.get(3)?,
                interactive: r.get(6)?,
                props: r.get(7)?,
                revenue_amount: r.get(8)?,
                revenue_currency: r.get(9)?,
                scroll_depth: r.get(10)?,
                engaged_ms: r.get(11)?,
            },
            visit_id: r.get(4)?,
            visitor_id: r.get(5)?,
            dims: VisitDims::from_row(r, 12)?,
        };
        if let Err(e) = each(event) {
            return Ok(Err(e));
        }
        n += 1;
    }
    Ok(Ok(n))
}

/// A past event to import.
pub type ImportEvent = EventFields;

/// A past visit to import: its visitor, attributes and events.
#[derive(Debug, Clone)]
pub struct ImportVisit {
    /// The file's visitor id; the stored one is derived from it per day.
    pub visitor_id: i64,
    pub dims: VisitDims,
    pub events: Vec<ImportEvent>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Imported {
    pub visits: u64,
    pub events: u64,
}

/// Why an import was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(
        "the site already has {0} events in the imported range; import into a new site, or \
         export only what came before"
    )]
    Overlap(i64),
    /// Imported aggregates are added to the rollups at once, and a rebuild
    /// under way would add them again when it reaches them.
    #[error(
        "the site's rollups are being rebuilt (after an upgrade or a timezone change); start \
         the server, wait until /api/health shows no rebuilding site, stop it and import again"
    )]
    Rebuilding,
    #[error("the OS random source failed: {0}")]
    Random(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for ImportError {
    fn from(e: rusqlite::Error) -> Self {
        ImportError::Store(e.into())
    }
}

/// The stored id of a file's visitor in a visit that started at `ts`: a
/// keyed hash of the file's id and the UTC day, under a key drawn for the
/// import and then forgotten. Tally's own visitor ids change with the
/// daily salt, so a visitor counts once a day, and the reports (the column
/// store's numbering too) rest on that; imported ids follow it, and cannot
/// be traced back to the file's.
fn day_visitor(key: &[u8; 32], visitor: i64, ts: i64) -> i64 {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(&visitor.to_le_bytes());
    h.update(&ts.div_euclid(86_400).to_le_bytes());
    let hash = h.finalize();
    i64::from_le_bytes(std::array::from_fn(|i| hash.as_bytes()[i]))
}

/// Writes `visits` for `site_id` in one transaction; the caller then
/// rebuilds the site's rollups from its raw tables. Refused when the site already has
/// events within the imported time range (they would be counted twice).
pub fn import_visits(
    conn: &mut Connection,
    site_id: i64,
    mut visits: Vec<ImportVisit>,
) -> Result<Imported, ImportError> {
    visits.retain(|v| !v.events.is_empty());
    for v in &mut visits {
        v.events.sort_by_key(|e| e.ts);
    }
    visits.sort_by_key(|v| v.events[0].ts);
    let (Some(first), Some(last)) = (
        visits.iter().map(|v| v.events[0].ts).min(),
        visits
            .iter()
            .filter_map(|v| v.events.last())
            .map(|e| e.ts)
            .max(),
    ) else {
        return Ok(Imported::default());
    };
    let tx = conn.transaction()?;
    let existing: i64 = tx.query_row(
        "SELECT COUNT(*) FROM events WHERE site_id = ?1 AND ts BETWEEN ?2 AND ?3",
        params![site_id, first, last],
        |r| r.get(0),
    )?;
    if existing > 0 {
        return Err(ImportError::Overlap(existing));
    }
    let first_id = super::sites::max_visit_id(&tx)? + 1;
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| ImportError::Random(e.to_string()))?;
    // Unique within a second: the key is (site, second, id), and the range
    // holds no other events of this site.
    let mut per_second: HashMap<i64, i64> = HashMap::new();
    let mut imported = Imported::default();
    for (visit_id, v) in (first_id..).zip(visits) {
        let dims = Arc::new(v.dims);
        let visitor_id = day_visitor(&key, v.visitor_id, v.events[0].ts);
        let mut seen_pages = std::collections::HashSet::new();
        let mut seen_names = std::collections::HashSet::new();
        let mut record = VisitRecord {
            id: visit_id,
            site_id,
            visitor_id,
            seq: 0,
            started_at: v.events[0].ts,
            last_seen_at: v.events[0].ts,
            entry_page: None,
            exit_page: None,
            pageviews: 0,
            events: 0,
            interactive: 0,
            is_bounce: false,
            dims: dims.clone(),
        };
        for (i, e) in v.events.into_iter().enumerate() {
            let pageview = e.name == "pageview";
            let first_view = if pageview {
                seen_pages.insert(e.path.clone())
            } else {
                seen_names.insert(e.name.clone())
            };
            if pageview {
                record.pageviews += 1;
                record.entry_page.get_or_insert_with(|| e.path.clone());
                record.exit_page = Some(e.path.clone());
            } else if e.name != "engagement" {
                record.events += 1;
                if e.interactive {
                    record.interactive += 1;
                }
            }
            record.seq += 1;
            record.last_seen_at = e.ts;
            let k = per_second.entry(e.ts).or_insert(0);
            *k += 1;
            let event = NewEvent {
                id: e.ts * 1_000_000 + *k,
                site_id,
                visitor_id,
                ts: e.ts,
                name: e.name,
                hostname: e.hostname,
                path: e.path,
                props: e.props,
                revenue_amount: e.revenue_amount,
                revenue_currency: e.revenue_currency,
                scroll_depth: e.scroll_depth,
                engaged_ms: e.engaged_ms,
                interactive: e.interactive,
                visit_id,
                first_of_visit: (i == 0).then(|| dims.clone()),
                first_view,
            };
            insert_event_row(&tx, &event, false)?;
            imported.events += 1;
        }
        record.is_bounce = record.pageviews <= 1 && record.interactive == 0;
        visits::upsert(&tx, &record)?;
        imported.visits += 1;
    }
    tx.commit()?;
    Ok(imported)
}
