//! Command line: clap definitions and dispatch. The only place that uses
//! `anyhow` and decides exit codes (2 for configuration and usage errors).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use crate::config::{ConfigError, LogFormat, Settings};
use crate::report::sqlite::rollups;
use crate::store::backup::{self, BackupError};
use crate::store::{self, DB_FILE_NAME, Store, StoreError, sites, users};
use crate::{check, demo, keys, serve, summary, transfer};
use chrono::Datelike;

mod user;
use user::user;

#[derive(Debug, Parser)]
#[command(
    name = "tally",
    version,
    about = "Privacy-first web analytics in one binary"
)]
pub struct Cli {
    /// Configuration file (TOML). Without one, built-in defaults apply.
    #[arg(long, global = true, env = "TALLY_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Manage sites.
    #[command(subcommand)]
    Site(SiteCommand),
    /// Manage Stats API keys.
    #[command(subcommand, name = "api-key")]
    ApiKey(ApiKeyCommand),
    /// Manage goals (conversions).
    #[command(subcommand)]
    Goal(GoalCommand),
    /// Manage dashboard users.
    #[command(subcommand)]
    User(UserCommand),
    /// Validate the configuration and the database, and print what is
    /// collected, where, for how long, and whether the consent-exemption
    /// conditions hold. Exits 1 when one fails.
    Check,
    /// Print a site's weekly summary: the last full week (Monday to Sunday,
    /// site time), or the week starting --week.
    Summary {
        domain: String,
        /// The week's Monday, YYYY-MM-DD.
        #[arg(long, value_name = "DATE")]
        week: Option<chrono::NaiveDate>,
    },
    /// Exit 0 when the server at [server] listen answers /api/health (for
    /// container health checks, where no curl is installed).
    Health,
    /// Write a consistent copy of the database to PATH (a new file, or a
    /// directory to put a dated one in). Safe while the server runs.
    Backup { path: PathBuf },
    /// Replace the database with the backup at PATH, after checking it. The
    /// server must be stopped; the replaced database is kept beside it.
    Restore { path: PathBuf },
    /// Write a site's raw events as CSV (one row per event, with its visit's
    /// attributes); `tally import --format tally-csv` reads it back.
    Export {
        domain: String,
        /// The file to write; `-` for standard output.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// First day (UTC) to include, YYYY-MM-DD.
        #[arg(long, value_name = "DATE")]
        from: Option<chrono::NaiveDate>,
        /// Last day (UTC) to include, YYYY-MM-DD.
        #[arg(long, value_name = "DATE")]
        to: Option<chrono::NaiveDate>,
    },
    /// Import past traffic into a site from a CSV export (a file, or a
    /// directory of them). The server must be stopped.
    Import {
        #[arg(long, value_enum)]
        format: transfer::Format,
        /// The site to import into; it must exist and have no events in the
        /// imported range.
        #[arg(long, value_name = "DOMAIN")]
        site: String,
        path: PathBuf,
    },
    /// Write realistic demo traffic for a site (through the real ingest path).
    Demo {
        /// The site to fill; it must exist.
        #[arg(long)]
        site: String,
        /// Pageviews to write; custom events come on top.
        #[arg(long)]
        events: u64,
        /// Spread over the last D days.
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// The same seed writes the same traffic.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum SiteCommand {
    /// Register a site by its domain, e.g. example.com.
    Add {
        domain: String,
        /// IANA timezone for day boundaries, e.g. Europe/Berlin.
        #[arg(long, default_value = "UTC")]
        timezone: String,
        /// Make the dashboard viewable without login.
        #[arg(long)]
        public: bool,
    },
    /// List registered sites.
    List,
    /// Remove a site and all its data.
    Remove {
        domain: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum GoalCommand {
    /// Count a custom event, or a visit to a page, as a conversion.
    #[command(group(clap::ArgGroup::new("kind").required(true).args(["event", "page"])))]
    Add {
        domain: String,
        /// A custom event name, e.g. "Signup".
        #[arg(long)]
        event: Option<String>,
        /// A page path, e.g. "/thanks"; `*` matches any characters.
        #[arg(long)]
        page: Option<String>,
    },
    /// List a site's goals.
    List { domain: String },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a dashboard user. Without --site the user is an admin and sees
    /// and manages every site; with it, a member of only the sites named.
    Add {
        email: String,
        /// Only these sites (repeat for several).
        #[arg(long = "site", value_name = "DOMAIN")]
        sites: Vec<String>,
        /// The role at those sites: viewer (the dashboard), editor (also
        /// goals, excluded traffic, timezone) or owner (also sharing,
        /// members, removing the site).
        #[arg(long, value_name = "ROLE", default_value = "owner", value_parser = parse_role, requires = "sites")]
        role: users::Role,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove a user with their site memberships and login sessions (their
    /// cookies stop working at once). The last admin cannot be removed.
    /// With --site, only the user's memberships of those sites go.
    Remove {
        email: String,
        /// Only the membership of this site (repeat for several); the
        /// user stays. The last owner may go: admins manage the site then.
        #[arg(long = "site", value_name = "DOMAIN")]
        sites: Vec<String>,
    },
    /// Set a new password; the user's open sessions end.
    Passwd {
        email: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List,
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key; it is printed once, as the last line.
    Create { name: String },
}

fn parse_role(s: &str) -> Result<users::Role, String> {
    users::Role::parse(s).ok_or_else(|| "choose viewer, editor or owner".into())
}

pub use crate::usage::UsageError;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref(), std::env::vars()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tally: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(settings.raw.log.format);
    match run(cli.command.unwrap_or(Command::Serve), settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("tally: error: {}", chain.join(": "));
            let usage = e.downcast_ref::<UsageError>().is_some()
                || e.downcast_ref::<ConfigError>().is_some()
                || matches!(
                    e.downcast_ref::<StoreError>(),
                    Some(
                        StoreError::SiteExists(_)
                            | StoreError::NoSuchSite(_)
                            | StoreError::UserExists(_)
                            | StoreError::NoSuchUser(_)
                    )
                )
                || matches!(
                    e.downcast_ref::<BackupError>(),
                    Some(BackupError::Exists(_) | BackupError::Missing(_) | BackupError::InUse(_))
                );
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TALLY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve => serve::serve(settings),
        Command::Site(cmd) => site(cmd, &settings),
        Command::Goal(cmd) => goal(cmd, &settings),
        Command::User(cmd) => user(cmd, &settings),
        Command::Check => {
            let report = check::run(&settings, store::now_unix())?;
            print!("{report}");
            match report.failures() {
                0 => Ok(()),
                n => bail!("{n} condition(s) of the privacy check fail"),
            }
        }
        Command::Health => health(&settings),
        Command::Summary { domain, week } => {
            let store = open(&settings)?;
            let domain = normalize_domain(&domain)?;
            // The reader goes back to the pool before the reports take one.
            let found = sites::find_site(&*store.reader()?, &domain)?;
            let Some(site) = found else {
                bail!(UsageError(format!("no site {domain}")));
            };
            let now = store::now_unix();
            let ctx = crate::query::Context::new(&site.timezone, now);
            let reports = crate::report::sqlite::SqliteReports::new(
                store.clone(),
                None,
                settings.raw.retention.raw_events_days,
            );
            let week = match week {
                Some(w) if w.weekday() != chrono::Weekday::Mon => {
                    bail!(UsageError(format!(
                        "--week {w} is a {}; give a Monday",
                        w.weekday()
                    )))
                }
                Some(w) => w,
                None => summary::last_full_week(ctx.today),
            };
            print!("{}", summary::text(&reports, &site, week, &ctx)?);
            Ok(())
        }
        Command::Export {
            domain,
            out,
            from,
            to,
        } => export(&settings, &domain, &out, from, to),
        Command::Import { format, site, path } => import(&settings, format, &site, &path),
        Command::Backup { path } => backup(&path, &settings),
        Command::Restore { path } => restore(&path, &settings),
        Command::Demo {
            site,
            events,
            days,
            seed,
        } => {
            let started = std::time::Instant::now();
            let report = demo::run(
                &settings,
                demo::DemoOptions {
                    site,
                    events,
                    days,
                    seed,
                },
            )?;
            println!(
                "Wrote {} pageviews and {} custom events in {} visits ({:.1} s)",
                report.pageviews,
                report.custom_events,
                report.visits,
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::ApiKey(ApiKeyCommand::Create { name }) => {
            let store = open(&settings)?;
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
    }
}

fn health(settings: &Settings) -> anyhow::Result<()> {
    use std::io::Read;
    let mut addr = settings.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let timeout = std::time::Duration::from_secs(3);
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET /api/health HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream
        .take(64 * 1024)
        .read_to_string(&mut answer)
        .with_context(|| format!("reading from {addr}"))?;
    let status = answer.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        bail!("http://{addr}/api/health answered {status:?}");
    }
    println!("ok");
    Ok(())
}

fn export(
    settings: &Settings,
    domain: &str,
    out: &std::path::Path,
    from: Option<chrono::NaiveDate>,
    to: Option<chrono::NaiveDate>,
) -> anyhow::Result<()> {
    let store = open(settings)?;
    let domain = normalize_domain(domain)?;
    let conn = store.reader()?;
    let Some(site) = sites::find_site(&conn, &domain)? else {
        bail!(UsageError(format!("no site {domain}")));
    };
    let day_start = |d: chrono::NaiveDate| d.and_time(chrono::NaiveTime::MIN).and_utc().timestamp();
    let from = from.map_or(i64::MIN, day_start);
    let to = to.map_or(i64::MAX, |d| day_start(d) + 86_400);
    if out == std::path::Path::new("-") {
        transfer::export(&conn, site.id, from, to, std::io::stdout().lock())?;
    } else {
        if out.exists() {
            bail!(UsageError(format!("{} already exists", out.display())));
        }
        let file =
            std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
        let n = transfer::export(&conn, site.id, from, to, std::io::BufWriter::new(file))?;
        eprintln!("Exported {n} events of {domain} to {}", out.display());
    }
    Ok(())
}

fn import(
    settings: &Settings,
    format: transfer::Format,
    domain: &str,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let data_dir = &settings.raw.storage.data_dir;
    let Some(_lock) = backup::DataDirLock::try_acquire(data_dir)? else {
        bail!(BackupError::InUse(data_dir.display().to_string()));
    };
    let store = open(settings)?;
    let domain = normalize_domain(domain)?;
    let Some(site) = sites::find_site(&*store.reader()?, &domain)? else {
        bail!(UsageError(format!("no site {domain}: add it first")));
    };
    let refused = |e: store::transfer::ImportError| match e {
        store::transfer::ImportError::Overlap(_) => anyhow::Error::new(UsageError(e.to_string())),
        other => other.into(),
    };
    let mut conn = store.write_connection()?;
    match transfer::read(format, path, &domain)? {
        transfer::Parsed::Visits(visits) => {
            let imported = rollups::import_visits(&mut conn, site.id, visits, store::now_unix())
                .map_err(refused)?;
            println!(
                "Imported {} events in {} visits into {domain}",
                imported.events, imported.visits
            );
        }
        transfer::Parsed::Aggregates(rows) => {
            let n = rollups::import_aggregates(&mut conn, site.id, rows).map_err(refused)?;
            println!("Imported {n} daily aggregate rows into {domain}");
        }
    }
    Ok(())
}

fn backup(path: &std::path::Path, settings: &Settings) -> anyhow::Result<()> {
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

fn restore(path: &std::path::Path, settings: &Settings) -> anyhow::Result<()> {
    let data_dir = &settings.raw.storage.data_dir;
    let restored = backup::restore(path, data_dir, store::now_unix())?;
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

fn open(settings: &Settings) -> anyhow::Result<Store> {
    Ok(Store::open(&settings.raw.storage.data_dir, 1)?)
}

/// Lower-cases a domain and refuses anything that is not a bare host name.
fn normalize_domain(domain: &str) -> anyhow::Result<String> {
    match sites::normalize_domain(domain) {
        Some(d) => Ok(d),
        None => bail!(UsageError(format!(
            "{domain:?} is not a domain like example.com (no scheme, path or port)"
        ))),
    }
}

fn site(cmd: SiteCommand, settings: &Settings) -> anyhow::Result<()> {
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
            let tx = conn.transaction()?;
            sites::remove_site(&tx, &domain)?;
            tx.commit()?;
            println!("Removed {domain}");
        }
    }
    Ok(())
}

fn goal(cmd: GoalCommand, settings: &Settings) -> anyhow::Result<()> {
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
