//! `tally site`, `tally goal` and `tally api-key`: registering and removing
//! sites, their goals, and Stats API keys.

use std::io::{BufRead, Write};

use anyhow::{Context, bail};
use rusqlite::TransactionBehavior;

use crate::config::Settings;
use crate::keys;
use crate::store::{removed, sites};
use crate::usage::UsageError;

use super::args::{GoalCommand, SiteCommand};
use super::shared::{normalize_domain, open};

pub(super) fn site(cmd: SiteCommand, settings: &Settings) -> anyhow::Result<()> {
    let store = open(settings)?;
    match cmd {
        SiteCommand::Add {
            domain,
            timezone,
            public,
        } => {
            let Some(domain) = sites::new_domain(&domain) else {
                bail!(UsageError(format!(
                    "{domain:?} is not a domain like example.com (a dot; no scheme, path or port)"
                )));
            };
            if timezone.parse::<chrono_tz::Tz>().is_err() {
                bail!(UsageError(format!(
                    "--timezone {timezone:?} is not an IANA timezone like Europe/Berlin"
                )));
            }
            let site = sites::add_site(&store.write_connection()?, &domain, &timezone, public)?;
            println!(
                "Added {} (timezone {}{})",
                site.domain,
                site.timezone,
                if public { ", public" } else { "" }
            );
        }
        SiteCommand::List => {
            let list = sites::list_sites(&*store.reader()?)?;
            if list.is_empty() {
                println!("No sites yet. Add one with: tally site add example.com");
            }
            for s in list {
                println!(
                    "{}\t{}\t{}",
                    s.domain,
                    s.timezone,
                    if s.public { "public" } else { "private" }
                );
            }
        }
        SiteCommand::Remove { domain, yes } => {
            let domain = normalize_domain(&domain)?;
            if !yes {
                print!("Remove {domain} and all its data? Type the domain to confirm: ");
                std::io::stdout().flush()?;
                let mut answer = String::new();
                std::io::stdin().lock().read_line(&mut answer)?;
                if answer.trim() != domain {
                    bail!(UsageError("not confirmed; nothing removed".into()));
                }
            }
            let mut conn = store.write_connection()?;
            // Each transaction here reads, then writes, beside a server that
            // may be committing: begun IMMEDIATE, it takes the write lock
            // first and waits for it (the busy timeout). A deferred one
            // would fail with "database is locked" when its read turned into
            // a write while the server held the lock, which SQLite does not
            // wait for.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            sites::remove_site(&tx, &domain)?;
            tx.commit()?;
            // Its rows go in batches, each a short transaction, so a server
            // running beside this keeps committing events between them.
            // After each, a pause as long as the batch took: the server's
            // writer, waiting in its busy handler, would otherwise rarely
            // find the lock free before the next batch took it again.
            let mut rows = 0;
            loop {
                let started = std::time::Instant::now();
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let done = removed::delete_batch(&tx, removed::BATCH)?;
                tx.commit()?;
                rows += done.rows;
                if !done.more {
                    break;
                }
                std::thread::sleep(started.elapsed().max(std::time::Duration::from_millis(10)));
            }
            println!("Removed {domain} ({rows} rows of its data deleted)");
        }
    }
    Ok(())
}

pub(super) fn goal(cmd: GoalCommand, settings: &Settings) -> anyhow::Result<()> {
    let store = open(settings)?;
    let (GoalCommand::Add { domain, .. } | GoalCommand::List { domain }) = &cmd;
    let domain = normalize_domain(domain)?;
    let Some(site) = sites::find_site(&*store.reader()?, &domain)? else {
        bail!(UsageError(format!("no site {domain}")));
    };
    match cmd {
        GoalCommand::Add { event, page, .. } => {
            let kind = match (event, page) {
                (Some(e), _) if !e.trim().is_empty() && e.chars().count() <= 120 => {
                    sites::GoalKind::Event(e.trim().to_string())
                }
                (None, Some(p)) if p.starts_with('/') && p.len() <= 2000 => {
                    sites::GoalKind::Page(p)
                }
                _ => bail!(UsageError(
                    "--event takes a name of 1 to 120 characters; --page a path starting with /"
                        .into()
                )),
            };
            let goal = sites::Goal { id: 0, kind };
            if sites::add_goal(&store.write_connection()?, site.id, &goal.kind)? {
                println!("Added goal {:?} to {domain}", goal.display_name());
            } else {
                println!("{domain} already has goal {:?}", goal.display_name());
            }
        }
        GoalCommand::List { .. } => {
            for g in sites::list_goals(&*store.reader()?, site.id)? {
                println!("{}", g.display_name());
            }
        }
    }
    Ok(())
}

pub(super) fn api_key_create(name: &str, settings: &Settings) -> anyhow::Result<()> {
    let store = open(settings)?;
    let name = name.trim();
    if name.is_empty() {
        bail!(UsageError("the key needs a name".into()));
    }
    let key = keys::generate().context("reading the OS random source")?;
    sites::add_api_key(
        &store.write_connection()?,
        name,
        &key[..keys::PREFIX_LEN],
        &keys::hash(&key),
    )?;
    println!("Created API key {name:?}. It is shown only now; store it safely:");
    println!("{key}");
    Ok(())
}
