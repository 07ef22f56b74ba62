//! `tally backup` and `tally restore`: a checked copy of the database, and
//! putting one back in place of the database of a stopped server.

use crate::config::Settings;
use crate::store::backup;
use crate::store::{self, DB_FILE_NAME};

use super::shared::open;

pub(super) fn backup(path: &std::path::Path, settings: &Settings) -> anyhow::Result<()> {
    // Opening migrates a database older than this binary, like the server would.
    let store = open(settings)?;
    let dest = if path.is_dir() {
        path.join(backup::scheduled_name(store::now_unix()))
    } else {
        path.to_path_buf()
    };
    let copied = backup::backup(store.path(), &dest)?;
    println!(
        "Backed up {} sites, {} events and {} visits ({:.1} MB) to {}",
        copied.sites,
        copied.events,
        copied.visits,
        copied.bytes as f64 / 1e6,
        dest.display()
    );
    Ok(())
}

pub(super) fn restore(path: &std::path::Path, settings: &Settings) -> anyhow::Result<()> {
    let data_dir = &settings.raw.storage.data_dir;
    // The column store followed the database replaced: it goes first, under
    // its own lock and the data directory's, so no server reads it and a
    // stop halfway leaves none beside the restored database (the server
    // seals that one).
    let restored = backup::restore(path, data_dir, store::now_unix(), || {
        crate::report::sqlite::sealer::forget_all(data_dir).map_err(|e| e.to_string())
    })?;
    let c = restored.contents;
    println!(
        "Restored {} sites, {} events and {} visits into {}",
        c.sites,
        c.events,
        c.visits,
        data_dir.join(DB_FILE_NAME).display()
    );
    if let Some(previous) = restored.previous {
        println!("The database it replaced is kept as {}", previous.display());
    }
    Ok(())
}
