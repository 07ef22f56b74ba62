//! Why an event was refused. The HTTP layer maps each to a status code.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum IngestError {
    /// A field of the payload is missing or breaks a limit.
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("unsupported content type {0:?}: send application/json or text/plain")]
    UnsupportedMediaType(String),
    #[error("body over {limit} bytes")]
    TooLarge { limit: usize },
    #[error("{0} is not a registered site")]
    UnknownSite(String),
    #[error("the write queue is full, retry shortly")]
    Overloaded,
    #[error("storing the event failed: {0}")]
    Storage(String),
    /// The writer has stopped: nothing can be stored until a restart.
    #[error("events cannot be stored right now")]
    Unavailable,
}

impl IngestError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> IngestError {
        IngestError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// Why the ingest pipeline could not start.
#[derive(Debug, Error)]
pub enum StartError {
    #[error("loading visitor-id salts: {0}")]
    Salt(#[from] super::visitor::SaltError),
    #[error("starting the writer thread: {0}")]
    Writer(std::io::Error),
    #[error("restoring open visits: {0}")]
    Store(#[from] crate::store::StoreError),
}
