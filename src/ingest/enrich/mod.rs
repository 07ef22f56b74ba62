//! Local enrichment of an event: user agent, bots, location, referrer, UTM.
//! Nothing here calls out of the process.

pub mod bots;
pub mod geo;
pub mod referrer;
pub mod ua;

pub use geo::{Geo, GeoLookup};
pub use ua::{DeviceKind, UaInfo, UaParser};
