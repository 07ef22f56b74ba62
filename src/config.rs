//! Configuration: the TOML file, environment overrides and validation, all
//! resolved here once. Nothing else reads configuration from the environment.
//!
//! Every key has a default, so no file at all is a valid configuration. Each
//! key `[section] key` can be overridden by `TALLY_<SECTION>_<KEY>`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: String,
        line: usize,
        message: String,
    },
    #[error("{var}: {message}")]
    Env { var: String, message: String },
    #[error("{key} = {value:?}: {message}")]
    Invalid {
        key: &'static str,
        value: String,
        message: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub geoip: GeoIpConfig,
    pub retention: RetentionConfig,
    pub columns: ColumnsConfig,
    pub privacy: PrivacyConfig,
    pub dashboard: DashboardConfig,
    pub metrics: MetricsConfig,
    pub backup: BackupConfig,
    pub smtp: SmtpConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub allow: Vec<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            allow: vec!["127.0.0.1/32".into(), "::1/128".into()],
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    pub dir: String,
    pub interval_hours: u32,
    pub keep: u32,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            dir: String::new(),
            interval_hours: 24,
            keep: 7,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    pub trusted_proxies: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    pub queue_capacity: usize,
    pub recent_days: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct GeoIpConfig {
    pub database: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    pub raw_events_days: u32,
    pub aggregates_days: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    pub respect_gpc: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardConfig {
    pub embed_share_links: bool,
    /// A session unused this long ends (the 30-day limit from sign-in stays).
    pub session_idle_minutes: u32,
    /// Live streams (`/{domain}/live`) one client address may hold open.
    pub live_streams_per_client: usize,
    /// Live streams the server holds open at once; those without a
    /// member's session may take half, those of one site a quarter.
    pub live_streams_total: usize,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            embed_share_links: false,
            session_idle_minutes: 7 * 24 * 60,
            live_streams_per_client: 8,
            live_streams_total: 256,
        }
    }
}

/// Sessions end this long after sign-in however active, so a longer idle
/// time means nothing.
pub const MAX_SESSION_IDLE_MINUTES: u32 = 30 * 24 * 60;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8000".into(),
            trusted_proxies: Vec::new(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("./data"),
            queue_capacity: 10_000,
            recent_days: 3,
        }
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            raw_events_days: 395,
            aggregates_days: 760,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ColumnsConfig {
    /// The most events of one site's UTC day the column store's sealer reads
    /// into memory at once (about 550 bytes each).
    pub seal_max_events_per_day: u64,
}

impl Default for ColumnsConfig {
    fn default() -> Self {
        // About 200 MiB of one day in memory at 550 bytes per event.
        ColumnsConfig {
            seal_max_events_per_day: 380_000,
        }
    }
}

/// How the connection to the mail server is secured.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (port 587); refused without it.
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the same host.
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub username: String,
    pub password: String,
    pub from: String,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            host: String::new(),
            port: 587,
            security: SmtpSecurity::Starttls,
            username: String::new(),
            password: String::new(),
            from: String::new(),
        }
    }
}

/// A configuration after validation, with parsed values ready to use.
#[derive(Debug, Clone)]
pub struct Settings {
    pub raw: Config,
    /// The file read, or `(defaults)`.
    pub source: String,
    pub listen: SocketAddr,
    pub trusted_proxies: Vec<IpNet>,
    pub geoip_database: Option<PathBuf>,
    /// Addresses that may read `/metrics`.
    pub metrics_allow: Vec<IpNet>,
    /// Where scheduled backups go; `None` when they are off.
    pub backup_dir: Option<PathBuf>,
}

/// The longest retention `tally check` accepts: 25 months, the limit EU
/// regulators set for consent-exempt audience measurement.
pub const MAX_RETENTION_DAYS: u32 = 760;

impl Settings {
    /// Loads `path` (or only defaults without one), applies `TALLY_*`
    /// overrides from `env`, and validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let (text, shown) = match path {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?,
                p.display().to_string(),
            ),
            None => (String::new(), "(defaults)".to_string()),
        };
        let mut config: Config = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
            line: e
                .span()
                .map(|s| text[..s.start].matches('\n').count() + 1)
                .unwrap_or(1),
            message: e.message().replace('\n', " "),
            path: shown.clone(),
        })?;
        config = apply_env(config, env)?;
        let mut settings = Settings::validate(config)?;
        settings.source = shown;
        Ok(settings)
    }

    fn validate(raw: Config) -> Result<Settings, ConfigError> {
        let invalid = |key: &'static str, value: &str, message: &str| ConfigError::Invalid {
            key,
            value: value.to_string(),
            message: message.to_string(),
        };
        let listen: SocketAddr = raw.server.listen.parse().map_err(|_| {
            invalid(
                "server.listen",
                &raw.server.listen,
                "expected an address and port like 127.0.0.1:8000",
            )
        })?;
        let nets = |key: &'static str, list: &[String]| {
            list.iter()
                .map(|s| {
                    s.parse::<IpNet>()
                        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                        .map_err(|_| {
                            invalid(key, s, "expected a CIDR like 10.0.0.0/8 or an IP address")
                        })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let trusted_proxies = nets("server.trusted_proxies", &raw.server.trusted_proxies)?;
        let metrics_allow = nets("metrics.allow", &raw.metrics.allow)?;
        if raw.storage.data_dir.as_os_str().is_empty() {
            return Err(invalid("storage.data_dir", "", "must not be empty"));
        }
        if raw.storage.queue_capacity == 0 {
            return Err(invalid("storage.queue_capacity", "0", "must be at least 1"));
        }
        for (key, n) in [
            (
                "dashboard.live_streams_per_client",
                raw.dashboard.live_streams_per_client,
            ),
            (
                "dashboard.live_streams_total",
                raw.dashboard.live_streams_total,
            ),
        ] {
            if n == 0 {
                return Err(invalid(key, "0", "must be at least 1"));
            }
        }
        let geoip_database = if raw.geoip.database.is_empty() {
            None
        } else {
            let p = PathBuf::from(&raw.geoip.database);
            if !p.is_file() {
                return Err(invalid(
                    "geoip.database",
                    &raw.geoip.database,
                    "no such file (leave empty to run without GeoIP)",
                ));
            }
            Some(p)
        };
        for (key, days) in [
            ("retention.raw_events_days", raw.retention.raw_events_days),
            ("retention.aggregates_days", raw.retention.aggregates_days),
        ] {
            if days == 0 {
                return Err(invalid(
                    key,
                    "0",
                    "must be at least 1: no data is kept forever by accident",
                ));
            }
        }
        if raw.columns.seal_max_events_per_day == 0 {
            return Err(invalid(
                "columns.seal_max_events_per_day",
                "0",
                "must be at least 1",
            ));
        }
        let idle = raw.dashboard.session_idle_minutes;
        if !(1..=MAX_SESSION_IDLE_MINUTES).contains(&idle) {
            return Err(invalid(
                "dashboard.session_idle_minutes",
                &idle.to_string(),
                &format!(
                    "expected 1 to {MAX_SESSION_IDLE_MINUTES} (30 days, when sessions end anyway)"
                ),
            ));
        }
        let backup_dir = if raw.backup.dir.is_empty() {
            None
        } else {
            if raw.backup.interval_hours == 0 {
                return Err(invalid("backup.interval_hours", "0", "must be at least 1"));
            }
            if raw.backup.keep == 0 {
                return Err(invalid("backup.keep", "0", "must be at least 1"));
            }
            Some(PathBuf::from(&raw.backup.dir))
        };
        if !raw.smtp.host.is_empty() {
            if raw.smtp.port == 0 {
                return Err(invalid("smtp.port", "0", "expected a port like 587"));
            }
            let from = &raw.smtp.from;
            if from.parse::<lettre::message::Mailbox>().is_err() {
                return Err(invalid(
                    "smtp.from",
                    from,
                    "expected the sender's address, like tally@example.com or \"Tally <tally@example.com>\"",
                ));
            }
            if raw.smtp.username.is_empty() != raw.smtp.password.is_empty() {
                return Err(invalid(
                    "smtp.username",
                    &raw.smtp.username,
                    "set both username and password, or neither",
                ));
            }
        }
        Ok(Settings {
            source: String::new(),
            listen,
            trusted_proxies,
            geoip_database,
            metrics_allow,
            backup_dir,
            raw,
        })
    }
}

/// Applies `TALLY_<SECTION>_<KEY>` variables. A value is read as a TOML value
/// when it parses as one (`true`, `8`, `["10.0.0.0/8"]`), else as a string.
fn apply_env(
    config: Config,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let mut table = toml::Table::try_from(&config).map_err(|e| ConfigError::Env {
        var: "TALLY_*".into(),
        message: format!("the settings cannot take overrides: {e}"),
    })?;
    let mut applied = Vec::new();
    for (var, value) in env {
        let Some(rest) = var.strip_prefix("TALLY_") else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        let mut target = None;
        for (section, keys) in table.iter() {
            let Some(keys) = keys.as_table() else {
                continue;
            };
            for key in keys.keys() {
                if rest == format!("{section}_{key}") {
                    target = Some((section.clone(), key.clone()));
                }
            }
        }
        let Some((section, key)) = target else {
            continue;
        };
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        // `target` was found among the sections that are tables.
        if let Some(keys) = table.get_mut(&section).and_then(|s| s.as_table_mut()) {
            keys.insert(key, parsed);
        }
        applied.push(var);
    }
    if applied.is_empty() {
        return Ok(config);
    }
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Env {
            var: applied.join(", "),
            message: e.message().replace('\n', " "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tally.toml");
        std::fs::write(&path, text).unwrap();
        Settings::load(
            Some(&path),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    /// config.example.toml documents every key with its default value.
    #[test]
    fn example_config_documents_every_key_with_its_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let example: toml::Table = text.parse().unwrap();
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        assert_eq!(example, defaults);
        Settings::load(Some(&path), Vec::new()).unwrap();
    }

    #[test]
    fn no_file_means_defaults() {
        let s = Settings::load(None, Vec::new()).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8000");
        assert_eq!(s.raw.storage.data_dir, PathBuf::from("./data"));
        assert!(s.geoip_database.is_none());
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = load("[server]\nlisten = \"127.0.0.1:1\"\nlistn = 3\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains(":3:"), "{e}");
        assert!(e.contains("listn"), "{e}");
    }

    #[test]
    fn invalid_value_names_key() {
        let e = load("[server]\nlisten = \"nope\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("server.listen"), "{e}");
        let e = load("[retention]\nraw_events_days = 0\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("retention.raw_events_days"), "{e}");
    }

    #[test]
    fn env_overrides_file() {
        let s = load(
            "[server]\nlisten = \"127.0.0.1:1\"\n",
            &[
                ("TALLY_SERVER_LISTEN", "0.0.0.0:9000"),
                ("TALLY_SERVER_TRUSTED_PROXIES", "[\"10.0.0.0/8\"]"),
                ("TALLY_PRIVACY_RESPECT_GPC", "true"),
            ],
        )
        .unwrap();
        assert_eq!(s.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(s.trusted_proxies.len(), 1);
        assert!(s.raw.privacy.respect_gpc);
        let s = load("", &[("TALLY_COLUMNS_SEAL_MAX_EVENTS_PER_DAY", "1000")]).unwrap();
        assert_eq!(s.raw.columns.seal_max_events_per_day, 1000);
        let e = load("[columns]\nseal_max_events_per_day = 0\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("columns.seal_max_events_per_day"), "{e}");
        let s = load("", &[("TALLY_DASHBOARD_SESSION_IDLE_MINUTES", "90")]).unwrap();
        assert_eq!(s.raw.dashboard.session_idle_minutes, 90);
        let e = load("[dashboard]\nsession_idle_minutes = 0\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("dashboard.session_idle_minutes"), "{e}");
        let e = load("", &[("TALLY_STORAGE_QUEUE_CAPACITY", "lots")])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("TALLY_STORAGE_QUEUE_CAPACITY"), "{e}");
    }
}
