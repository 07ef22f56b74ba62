//! Browser, OS and device type from the User-Agent, with uap-core's rules
//! (embedded at build time from the `ua-parser` package) and a bounded cache.

use std::sync::Arc;

use quick_cache::sync::Cache;

static UAP_REGEXES: &str = include_str!(concat!(env!("OUT_DIR"), "/uap_regexes.json"));

/// Distinct User-Agents kept parsed; real traffic has a long tail but a short head.
const CACHE_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Mobile,
    Tablet,
    Desktop,
}

impl DeviceKind {
    /// The stored name; a desktop with a screen under 1440 px is a laptop.
    pub fn label(self, screen_width: Option<i64>) -> &'static str {
        match self {
            DeviceKind::Mobile => "Mobile",
            DeviceKind::Tablet => "Tablet",
            DeviceKind::Desktop => match screen_width {
                Some(w) if w > 0 && w < 1440 => "Laptop",
                _ => "Desktop",
            },
        }
    }
}

/// What the User-Agent says, reduced to the dimensions Tally keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct UaInfo {
    pub browser: String,
    /// Major version only.
    pub browser_version: Option<String>,
    pub os: String,
    pub os_version: Option<String>,
    pub device: DeviceKind,
    /// uap-core's device family; "Spider" marks crawlers.
    pub device_family: String,
    /// Why this User-Agent is a bot, if it is one. Decided once per distinct
    /// User-Agent, as part of the cached result.
    pub bot: Option<super::bots::BotReason>,
}

pub struct UaParser {
    extractor: ua_parser::Extractor<'static>,
    cache: Cache<String, Arc<UaInfo>>,
}

impl UaParser {
    /// Compiles uap-core's rules (about 0.1 s).
    // The rules are embedded at build time and never change at run time;
    // every test that parses a User-Agent proves they load and compile.
    #[allow(clippy::expect_used)]
    pub fn new() -> UaParser {
        let regexes: ua_parser::Regexes<'static> =
            serde_json::from_str(UAP_REGEXES).expect("embedded uap-core rules are valid");
        let extractor =
            ua_parser::Extractor::try_from(regexes).expect("embedded uap-core rules compile");
        UaParser {
            extractor,
            cache: Cache::new(CACHE_ENTRIES),
        }
    }

    pub fn parse(&self, ua: &str) -> Arc<UaInfo> {
        if let Some(hit) = self.cache.get(ua) {
            return hit;
        }
        let info = Arc::new(self.parse_uncached(ua));
        self.cache.insert(ua.to_string(), info.clone());
        info
    }

    fn parse_uncached(&self, ua: &str) -> UaInfo {
        let (browser, os, device) = self.extractor.extract(ua);
        let (browser, browser_version) = browser
            .map(|b| (b.family.to_string(), b.major.map(str::to_string)))
            .unwrap_or_else(|| ("Other".to_string(), None));
        let (os, os_version) = os
            .map(|o| (o.os.to_string(), o.major.map(|m| m.to_string())))
            .unwrap_or_else(|| ("Other".to_string(), None));
        let device_family = device
            .map(|d| d.device.to_string())
            .unwrap_or_else(|| "Other".to_string());
        let device = device_kind(ua, &os, &device_family);
        let mut info = UaInfo {
            browser,
            browser_version,
            os,
            os_version,
            device,
            device_family,
            bot: None,
        };
        info.bot = super::bots::classify(ua, &info);
        info
    }
}

impl Default for UaParser {
    fn default() -> Self {
        UaParser::new()
    }
}

fn device_kind(ua: &str, os: &str, device_family: &str) -> DeviceKind {
    let family = device_family.to_ascii_lowercase();
    if family.contains("ipad") || family.contains("tablet") || family.contains("kindle") {
        return DeviceKind::Tablet;
    }
    if ua.contains("Tablet") || ua.contains("Silk/") {
        return DeviceKind::Tablet;
    }
    match os {
        "iOS" | "iPadOS" => {
            if family.contains("iphone") || family.contains("ipod") {
                DeviceKind::Mobile
            } else {
                DeviceKind::Tablet
            }
        }
        // Android phones say "Mobile"; Android tablets leave it out.
        "Android" => {
            if ua.contains("Mobile") {
                DeviceKind::Mobile
            } else {
                DeviceKind::Tablet
            }
        }
        "Windows Phone" | "BlackBerry OS" | "KaiOS" | "Symbian OS" | "Firefox OS" | "Sailfish" => {
            DeviceKind::Mobile
        }
        _ if ua.contains("Mobi") => DeviceKind::Mobile,
        _ => DeviceKind::Desktop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_browsers() {
        let p = UaParser::new();
        let chrome = p.parse("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36");
        assert_eq!(chrome.browser, "Chrome");
        assert_eq!(chrome.browser_version.as_deref(), Some("120"));
        assert_eq!(chrome.os, "Windows");
        assert_eq!(chrome.device, DeviceKind::Desktop);
        let iphone = p.parse("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1");
        assert_eq!(iphone.browser, "Mobile Safari");
        assert_eq!(iphone.os, "iOS");
        assert_eq!(iphone.device, DeviceKind::Mobile);
        let tab = p.parse("Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36");
        assert_eq!(tab.device, DeviceKind::Tablet);
        assert_eq!(DeviceKind::Desktop.label(Some(1280)), "Laptop");
        assert_eq!(DeviceKind::Desktop.label(Some(1920)), "Desktop");
    }
}
