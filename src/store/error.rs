//! Errors of the store layer.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("creating data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("opening database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error(
        "database schema version {found} is newer than this binary supports ({supported}); \
         upgrade tally or restore a matching backup"
    )]
    TooNew { found: i64, supported: i64 },
    #[error("applying migration {version}: {source}")]
    Migration {
        version: i64,
        source: rusqlite::Error,
    },
    #[error("migration {version} was not applied: {detail}")]
    MigrationCheck { version: i64, detail: String },
    #[error("event journal {path}: {source}")]
    Journal {
        path: String,
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("connection pool: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("site {0} already exists")]
    SiteExists(String),
    #[error("no site {0}")]
    NoSuchSite(String),
    #[error("user {0} already exists")]
    UserExists(String),
    #[error("no user {0}")]
    NoSuchUser(String),
}

/// Why the writer did not take or store something.
#[derive(Debug, Error, Clone)]
pub enum WriteError {
    #[error("the write queue is full")]
    QueueFull,
    #[error("the writer has stopped")]
    Closed,
    #[error("write failed: {0}")]
    Failed(String),
}
