//! The error of a command used wrongly (an unknown site, a bad flag value):
//! the command line prints it as one line and exits with code 2. A leaf, so
//! every command at the edge (`cli`, `demo`, `transfer`) can raise it
//! without importing the dispatcher that catches it.

/// A user error: exit code 2, one line, no backtrace.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
