//! Event rows as stored: the insert statements of the `events` table, used
//! by the writer for each commit and by the journal's replay at start (with
//! `INSERT OR IGNORE`, so a replay adds only what the database lacks).

use rusqlite::Connection;

use super::StoreError;
use super::records::NewEvent;

macro_rules! insert_event_sql {
    ($verb:literal) => {
        concat!(
            $verb,
            " INTO events (site_id, visit_id, visitor_id, ts, name, hostname, path, props,
                revenue_amount, revenue_currency, scroll_depth, engaged_ms, interactive,
                first_of_visit, first_view, id, referrer, source, utm_medium, utm_source,
                utm_campaign, utm_term, utm_content, country, region, city, browser,
                browser_version, os, os_version, device)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31)"
        )
    };
    ($verb:literal, bare) => {
        concat!(
            $verb,
            " INTO events (site_id, visit_id, visitor_id, ts, name, hostname, path, props,
                revenue_amount, revenue_currency, scroll_depth, engaged_ms, interactive,
                first_of_visit, first_view, id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
        )
    };
}
const INSERT: &str = insert_event_sql!("INSERT");
const INSERT_IF_NEW: &str = insert_event_sql!("INSERT OR IGNORE");
/// For events that do not start a visit: the visit's attributes stay NULL,
/// and are not bound one by one (most events are such).
const INSERT_BARE: &str = insert_event_sql!("INSERT", bare);
const INSERT_BARE_IF_NEW: &str = insert_event_sql!("INSERT OR IGNORE", bare);

/// Inserts `ev` with the id it carries; with `if_new`, only if no event
/// has its key yet (replaying the journal). Returns the rows added.
pub(super) fn insert_event_row(
    tx: &Connection,
    ev: &NewEvent,
    if_new: bool,
) -> Result<usize, StoreError> {
    insert_events(tx, std::slice::from_ref(ev), if_new)
}

/// Inserts `events` as [`insert_event_row`] does, with the statements looked
/// up once for all of them. Returns the rows added.
pub(crate) fn insert_events(
    tx: &Connection,
    events: &[NewEvent],
    if_new: bool,
) -> Result<usize, StoreError> {
    let (full, bare) = if if_new {
        (INSERT_IF_NEW, INSERT_BARE_IF_NEW)
    } else {
        (INSERT, INSERT_BARE)
    };
    let (mut full, mut bare) = (tx.prepare_cached(full)?, tx.prepare_cached(bare)?);
    let mut added = 0;
    for ev in events {
        let own = [
            &ev.site_id as &dyn rusqlite::ToSql,
            &ev.visit_id,
            &ev.visitor_id,
            &ev.ts,
            &ev.name,
            &ev.hostname,
            &ev.path,
            &ev.props,
            &ev.revenue_amount,
            &ev.revenue_currency,
            &ev.scroll_depth,
            &ev.engaged_ms,
            &ev.interactive,
            &ev.first_of_visit.is_some(),
            &ev.first_view,
            &ev.id,
        ];
        added += match ev.first_of_visit.as_deref() {
            Some(dims) => full.execute(rusqlite::params_from_iter(
                own.into_iter().chain(dims.params()),
            ))?,
            None => bare.execute(rusqlite::params_from_iter(own))?,
        };
    }
    Ok(added)
}
