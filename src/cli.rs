//! Command line: parses the arguments (`args.rs`), sets up logging, hands
//! each command to its body in the files beside this one, and decides exit
//! codes (2 for configuration and usage errors). The only place, with those
//! bodies, that uses `anyhow`.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use crate::config::{ConfigError, LogFormat, Settings};
use crate::serve;
use crate::store::StoreError;
use crate::store::backup::BackupError;

mod args;
mod backup;
mod data;
mod health;
mod reports;
mod shared;
mod site;
mod user;

pub use crate::usage::UsageError;
pub use args::{ApiKeyCommand, Cli, Command, GoalCommand, SiteCommand, UserCommand};

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
            ExitCode::from(if is_usage(&e) { 2 } else { 1 })
        }
    }
}

/// Whether a command failed for what it was given (arguments, settings, a
/// site or user that exists or does not, a file in the way) rather than
/// for what happened while it ran.
fn is_usage(e: &anyhow::Error) -> bool {
    e.downcast_ref::<UsageError>().is_some()
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
        )
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
        Command::Site(cmd) => site::site(cmd, &settings),
        Command::Goal(cmd) => site::goal(cmd, &settings),
        Command::ApiKey(ApiKeyCommand::Create { name }) => site::api_key_create(&name, &settings),
        Command::User(cmd) => user::user(cmd, &settings),
        Command::Check => reports::check(&settings),
        Command::Summary { domain, week } => reports::summary(domain, week, settings),
        Command::Health => health::health(&settings),
        Command::Export {
            domain,
            out,
            from,
            to,
        } => data::export(&settings, &domain, &out, from, to),
        Command::Import { format, site, path } => data::import(&settings, format, &site, &path),
        Command::Demo {
            site,
            events,
            days,
            seed,
        } => data::demo(&settings, site, events, days, seed),
        Command::Backup { path } => backup::backup(&path, &settings),
        Command::Restore { path } => backup::restore(&path, &settings),
    }
}
