//! The command line's shape: clap definitions of every command, its
//! arguments and their value parsers. The bodies that run them are in the
//! files beside this one.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::store::users;
use crate::transfer;

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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// clap's own consistency checks (argument ids, groups, `requires`),
    /// which otherwise run only when a command line is parsed.
    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn role_is_parsed_or_refused_with_the_choices() {
        assert_eq!(parse_role("editor"), Ok(users::Role::Editor));
        assert_eq!(
            parse_role("admin"),
            Err("choose viewer, editor or owner".to_string())
        );
    }
}
