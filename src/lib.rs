//! Tally: self-hosted, privacy-first web analytics in one binary.
//!
//! Imports run one way: [`http`] → [`ingest`] → [`store`] for events, and
//! [`http`] → [`query`] → [`report`] → [`store`] for reports; [`serve`]
//! joins the two. See ARCHITECTURE.md for the map.

// A panic on a request or a background job is a defect: fallible steps use
// `?`, and the few unwraps that cannot fail say why at the spot.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod alloc;
pub mod auth;
pub mod check;
pub mod cli;
pub mod config;
pub mod demo;
pub mod http;
pub mod ingest;
pub mod jobs;
pub mod keys;
pub mod mail;
pub mod metrics;
pub mod parallel;
pub mod query;
pub mod report;
pub mod serve;
pub mod spreadsheet;
pub mod store;
pub mod summary;
pub mod supervise;
pub mod sync;
pub mod transfer;
pub mod usage;
