//! `tally user`: adding, removing and listing dashboard users, their
//! passwords, and their memberships of sites.

use std::io::{BufRead, IsTerminal};

use anyhow::bail;

use super::args::UserCommand;
use super::shared::{normalize_domain, open};
use crate::auth;
use crate::config::Settings;
use crate::store::{self, Store, StoreError, sites, users};
use crate::usage::UsageError;

/// A password from stdin's first line, or typed twice at a hidden prompt.
fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    let password = if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        let first = rpassword::prompt_password("Password: ")?;
        let again = rpassword::prompt_password("Again: ")?;
        if first != again {
            bail!(UsageError("the passwords differ".into()));
        }
        first
    };
    auth::hash_password(&password).map_err(|e| UsageError(e.to_string()).into())
}

/// Trims an email and refuses what cannot be one.
fn normalize_email(email: &str) -> anyhow::Result<String> {
    match auth::valid_email(email) {
        Some(e) => Ok(e),
        None => bail!(UsageError(format!("{email:?} is not an email address"))),
    }
}

pub(super) fn user(cmd: UserCommand, settings: &Settings) -> anyhow::Result<()> {
    let store = open(settings)?;
    match cmd {
        UserCommand::Add {
            email,
            sites: domains,
            role,
            password_stdin,
        } => {
            let email = normalize_email(&email)?;
            let conn = store.write_connection()?;
            let mut granted = Vec::new();
            for d in &domains {
                let d = normalize_domain(d)?;
                match sites::find_site(&conn, &d)? {
                    Some(site) => granted.push(site),
                    None => bail!(UsageError(format!("no site {d}"))),
                }
            }
            let hash = read_password(password_stdin)?;
            let tx = conn.unchecked_transaction()?;
            let user = users::add_user(&tx, &email, &hash, granted.is_empty(), store::now_unix())?;
            for site in &granted {
                users::grant(&tx, site.id, user.id, role)?;
            }
            tx.commit()?;
            if user.admin {
                println!("Added {email} (admin: sees and manages every site)");
            } else {
                let names: Vec<&str> = granted.iter().map(|s| s.domain.as_str()).collect();
                println!("Added {email} ({role} of {})", names.join(", "));
            }
        }
        UserCommand::Remove {
            email,
            sites: domains,
        } if !domains.is_empty() => {
            leave_sites(&store, &normalize_email(&email)?, &domains)?;
        }
        UserCommand::Remove { email, .. } => {
            let email = normalize_email(&email)?;
            match users::remove_user(&store.write_connection()?, &email)? {
                users::UserRemoval::LastAdmin => bail!(UsageError(format!(
                    "{email} is the last admin; add another admin before removing this one"
                ))),
                users::UserRemoval::Removed { ownerless } => {
                    println!("Removed {email} with their memberships and sessions");
                    if !ownerless.is_empty() {
                        println!(
                            "Sites now without an owner (admins manage them): {}",
                            ownerless.join(", ")
                        );
                    }
                }
            }
        }
        UserCommand::Passwd {
            email,
            password_stdin,
        } => {
            let email = normalize_email(&email)?;
            if users::find_user(&*store.reader()?, &email)?.is_none() {
                bail!(StoreError::NoSuchUser(email));
            }
            let hash = read_password(password_stdin)?;
            users::set_password(&store.write_connection()?, &email, &hash)?;
            println!("Password of {email} changed; its sessions have ended");
        }
        UserCommand::List => {
            let conn = store.reader()?;
            for (email, admin) in users::list_users(&conn)? {
                println!("{email}\t{}", if admin { "admin" } else { "member" });
            }
        }
    }
    Ok(())
}

/// `tally user remove EMAIL --site DOMAIN...`: ends those memberships, all
/// or none. The operator may leave a site without an owner, as an admin
/// may; it is said.
fn leave_sites(store: &Store, email: &str, domains: &[String]) -> anyhow::Result<()> {
    let conn = store.write_connection()?;
    let tx = conn.unchecked_transaction()?;
    let Some((user, _)) = users::find_user(&tx, email)? else {
        bail!(StoreError::NoSuchUser(email.to_string()));
    };
    let (mut left, mut ownerless) = (Vec::new(), Vec::new());
    for d in domains {
        let d = normalize_domain(d)?;
        let Some(site) = sites::find_site(&tx, &d)? else {
            bail!(UsageError(format!("no site {d}")));
        };
        match users::remove_member(&tx, site.id, user.id, true)? {
            users::MemberChange::Done => {}
            users::MemberChange::LastOwner => {
                users::remove_member(&tx, site.id, user.id, false)?;
                ownerless.push(d.clone());
            }
            users::MemberChange::NotAMember => {
                bail!(UsageError(format!("{email} is not a member of {d}")))
            }
        }
        left.push(d);
    }
    tx.commit()?;
    println!("Removed {email} from {}", left.join(", "));
    if !ownerless.is_empty() {
        println!(
            "Sites now without an owner (admins manage them): {}",
            ownerless.join(", ")
        );
    }
    if user.admin {
        println!("{email} is an admin and still sees every site");
    }
    Ok(())
}
