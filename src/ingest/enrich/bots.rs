//! Bot filtering: crawlers, headless browsers, monitors, link-preview fetchers
//! and anything that does not present itself as a browser. Such events are
//! acknowledged (so the sender learns nothing) and never stored.

use super::UaInfo;

/// Why a request was taken for a bot; a label for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BotReason {
    EmptyUserAgent,
    NotABrowser,
    Crawler,
    Headless,
    Monitor,
    Preview,
}

impl BotReason {
    pub fn label(self) -> &'static str {
        match self {
            BotReason::EmptyUserAgent => "empty_user_agent",
            BotReason::NotABrowser => "not_a_browser",
            BotReason::Crawler => "crawler",
            BotReason::Headless => "headless",
            BotReason::Monitor => "monitor",
            BotReason::Preview => "preview",
        }
    }
}

/// Lower-case fragments, each with the reason it stands for. Checked in order.
const PATTERNS: &[(&str, BotReason)] = &[
    ("headlesschrome", BotReason::Headless),
    ("phantomjs", BotReason::Headless),
    ("puppeteer", BotReason::Headless),
    ("playwright", BotReason::Headless),
    ("selenium", BotReason::Headless),
    ("electron/", BotReason::Headless),
    ("lighthouse", BotReason::Headless),
    ("chrome-lighthouse", BotReason::Headless),
    ("facebookexternalhit", BotReason::Preview),
    ("facebookcatalog", BotReason::Preview),
    ("slackbot", BotReason::Preview),
    ("slack-imgproxy", BotReason::Preview),
    ("twitterbot", BotReason::Preview),
    ("linkedinbot", BotReason::Preview),
    ("whatsapp", BotReason::Preview),
    ("telegrambot", BotReason::Preview),
    ("discordbot", BotReason::Preview),
    ("skypeuripreview", BotReason::Preview),
    ("embedly", BotReason::Preview),
    ("iframely", BotReason::Preview),
    ("pinterest", BotReason::Preview),
    ("redditbot", BotReason::Preview),
    ("mastodon", BotReason::Preview),
    ("bluesky", BotReason::Preview),
    ("google-pagerenderer", BotReason::Preview),
    ("uptimerobot", BotReason::Monitor),
    ("pingdom", BotReason::Monitor),
    ("statuscake", BotReason::Monitor),
    ("site24x7", BotReason::Monitor),
    ("datadog", BotReason::Monitor),
    ("newrelicpinger", BotReason::Monitor),
    ("better uptime", BotReason::Monitor),
    ("betteruptime", BotReason::Monitor),
    ("uptime-kuma", BotReason::Monitor),
    ("freshping", BotReason::Monitor),
    ("checkly", BotReason::Monitor),
    ("gtmetrix", BotReason::Monitor),
    ("pagespeed", BotReason::Monitor),
    ("bot", BotReason::Crawler),
    ("crawl", BotReason::Crawler),
    ("spider", BotReason::Crawler),
    ("slurp", BotReason::Crawler),
    ("scrapy", BotReason::Crawler),
    ("archiver", BotReason::Crawler),
    ("ia_archiver", BotReason::Crawler),
    ("mediapartners-google", BotReason::Crawler),
    ("adsbot", BotReason::Crawler),
    ("feedfetcher", BotReason::Crawler),
    ("bingpreview", BotReason::Crawler),
    ("yahoo! slurp", BotReason::Crawler),
    ("python-", BotReason::NotABrowser),
    ("curl/", BotReason::NotABrowser),
    ("wget/", BotReason::NotABrowser),
    ("go-http-client", BotReason::NotABrowser),
    ("okhttp", BotReason::NotABrowser),
    ("axios/", BotReason::NotABrowser),
    ("node-fetch", BotReason::NotABrowser),
    ("undici", BotReason::NotABrowser),
    ("java/", BotReason::NotABrowser),
    ("libwww", BotReason::NotABrowser),
    ("httpclient", BotReason::NotABrowser),
    ("postmanruntime", BotReason::NotABrowser),
    ("insomnia", BotReason::NotABrowser),
];

/// Device names that contain a bot pattern but are phones people browse with.
const NOT_BOTS: &[&str] = &["cubot"];

/// Returns why `ua` is a bot, or `None` for what looks like a person's browser.
pub fn classify(ua: &str, info: &UaInfo) -> Option<BotReason> {
    let ua = ua.trim();
    if ua.is_empty() {
        return Some(BotReason::EmptyUserAgent);
    }
    let mut lower = ua.to_ascii_lowercase();
    for name in NOT_BOTS {
        lower = lower.replace(name, "");
    }
    if let Some((_, reason)) = PATTERNS.iter().find(|(p, _)| lower.contains(p)) {
        return Some(*reason);
    }
    if info.device_family == "Spider" {
        return Some(BotReason::Crawler);
    }
    // Every browser in use announces itself as Mozilla/ (old Opera as Opera/).
    if !(ua.starts_with("Mozilla/") || ua.starts_with("Opera/")) {
        return Some(BotReason::NotABrowser);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::UaParser;
    use super::*;

    #[test]
    fn bots_and_browsers() {
        let p = UaParser::new();
        let check = |ua: &str| classify(ua, &p.parse(ua));
        assert_eq!(check(""), Some(BotReason::EmptyUserAgent));
        assert_eq!(check("curl/8.4.0"), Some(BotReason::NotABrowser));
        assert_eq!(
            check("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"),
            Some(BotReason::Crawler)
        );
        assert_eq!(
            check(
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36"
            ),
            Some(BotReason::Headless)
        );
        assert_eq!(
            check("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)"),
            Some(BotReason::Preview)
        );
        assert_eq!(
            check("Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)"),
            Some(BotReason::Monitor)
        );
        assert_eq!(
            check(
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15"
            ),
            None
        );
        assert_eq!(
            check(
                "Mozilla/5.0 (Linux; Android 12; CUBOT KINGKONG 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36"
            ),
            None,
            "a phone brand, not a bot"
        );
    }
}
