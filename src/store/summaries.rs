//! Weekly summaries as written: one text per site and local week, and
//! whether it was e-mailed.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;

/// A stored summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSummary {
    /// The week's Monday, YYYY-MM-DD.
    pub week_start: String,
    pub body: String,
    pub emailed_at: Option<i64>,
    pub email_error: Option<String>,
}

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredSummary> {
    Ok(StoredSummary {
        week_start: r.get(0)?,
        body: r.get(1)?,
        emailed_at: r.get(2)?,
        email_error: r.get(3)?,
    })
}

/// Stores the summary of a week unless one exists; true when stored.
pub fn put(
    conn: &Connection,
    site_id: i64,
    week_start: &str,
    body: &str,
    now: i64,
) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(
            "INSERT INTO summaries (site_id, week_start, body, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (site_id, week_start) DO NOTHING",
        )?
        .execute(params![site_id, week_start, body, now])?
        == 1)
}

pub fn get(
    conn: &Connection,
    site_id: i64,
    week_start: &str,
) -> Result<Option<StoredSummary>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT week_start, body, emailed_at, email_error FROM summaries
             WHERE site_id = ?1 AND week_start = ?2",
        )?
        .query_row(params![site_id, week_start], from_row)
        .optional()?)
}

/// The newest summary of a site.
pub fn latest(conn: &Connection, site_id: i64) -> Result<Option<StoredSummary>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT week_start, body, emailed_at, email_error FROM summaries
             WHERE site_id = ?1 ORDER BY week_start DESC LIMIT 1",
        )?
        .query_row([site_id], from_row)
        .optional()?)
}

/// Records the outcome of e-mailing a summary: sent, or the error.
pub fn mark_emailed(
    conn: &Connection,
    site_id: i64,
    week_start: &str,
    now: i64,
    error: Option<&str>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE summaries SET emailed_at = ?3, email_error = ?4
         WHERE site_id = ?1 AND week_start = ?2",
    )?
    .execute(params![site_id, week_start, now, error])?;
    Ok(())
}
