//! What the command bodies share: the store they open and the domain
//! argument they read.

use anyhow::bail;

use crate::config::Settings;
use crate::store::{Store, sites};
use crate::usage::UsageError;

pub(super) fn open(settings: &Settings) -> anyhow::Result<Store> {
    Ok(Store::open(&settings.raw.storage.data_dir, 1)?)
}

/// Lower-cases a domain and refuses anything that is not a bare host name.
pub(super) fn normalize_domain(domain: &str) -> anyhow::Result<String> {
    match sites::normalize_domain(domain) {
        Some(d) => Ok(d),
        None => bail!(UsageError(format!(
            "{domain:?} is not a domain like example.com (no scheme, path or port)"
        ))),
    }
}
