//! A prototype read model for Tally's filtered reports: per-site,
//! per-UTC-day column files, memory-mapped, answered by a filter scan.
//!
//! - [`format`]: the file container (header, sections, checksum).
//! - [`store`]: the files of one site, opened and mapped.
//! - [`builder`]: building them from Tally's SQLite tables.
//! - [`query`]: totals, series and breakdowns with Tally's raw semantics.
//! - [`model`]: Tally's report types, copied.

pub mod builder;
pub mod format;
pub mod model;
pub mod query;
pub mod store;
