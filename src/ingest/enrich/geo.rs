//! Country, region and city from a local `.mmdb` file.
//!
//! Two layouts are read: MaxMind's GeoIP2/GeoLite2 (`country.iso_code`,
//! `subdivisions[0].names.en`, `city.names.en`) and the flat one of DB-IP's
//! lite files (`country_code`, `state1`, `city`). Without a database every
//! location is unknown.

use std::net::IpAddr;
use std::path::Path;

use maxminddb::{PathElement, Reader};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Geo {
    /// ISO 3166-1 alpha-2 code.
    pub country: Option<String>,
    pub region: Option<String>,
    pub city: Option<String>,
}

pub struct GeoLookup {
    reader: Option<Reader<Vec<u8>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("opening GeoIP database {path}: {message}")]
pub struct GeoError {
    path: String,
    message: String,
}

impl GeoLookup {
    /// A lookup that knows nothing.
    pub fn disabled() -> GeoLookup {
        GeoLookup { reader: None }
    }

    pub fn open(path: &Path) -> Result<GeoLookup, GeoError> {
        let reader = Reader::open_readfile(path).map_err(|e| GeoError {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(GeoLookup {
            reader: Some(reader),
        })
    }

    /// The database type from its metadata, e.g. "GeoIP2-City".
    pub fn database_type(&self) -> Option<&str> {
        self.reader
            .as_ref()
            .map(|r| r.metadata().database_type.as_str())
    }

    pub fn lookup(&self, ip: IpAddr) -> Geo {
        let Some(reader) = &self.reader else {
            return Geo::default();
        };
        let Ok(found) = reader.lookup(ip) else {
            return Geo::default();
        };
        let text = |path: &[PathElement<'_>]| -> Option<String> {
            found
                .decode_path::<String>(path)
                .ok()
                .flatten()
                .filter(|s| !s.is_empty())
        };
        use PathElement::{Index, Key};
        let country = text(&[Key("country"), Key("iso_code")])
            .or_else(|| text(&[Key("country_code")]))
            .map(|c| c.to_ascii_uppercase());
        let region = text(&[Key("subdivisions"), Index(0), Key("names"), Key("en")])
            .or_else(|| text(&[Key("state1")]));
        let city = text(&[Key("city"), Key("names"), Key("en")]).or_else(|| text(&[Key("city")]));
        Geo {
            country,
            region,
            city,
        }
    }
}
