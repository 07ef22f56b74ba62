//! Where a visit came from: the referrer's source name, UTM tags and click ids.

use url::Url;

use crate::ingest::payload::strip_www;

/// Attribution of a visit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attribution {
    /// Referrer as host and path, without scheme, query or fragment.
    pub referrer: Option<String>,
    /// Display name: a known service ("Google"), else the referring host.
    pub source: Option<String>,
    pub utm_medium: Option<String>,
    pub utm_source: Option<String>,
    pub utm_campaign: Option<String>,
    pub utm_term: Option<String>,
    pub utm_content: Option<String>,
}

/// Host suffixes of well-known services and the name each is shown as.
/// More specific hosts come first (Gmail before Google).
const KNOWN: &[(&str, &str)] = &[
    ("mail.google.com", "Gmail"),
    ("news.google.com", "Google News"),
    ("google.com", "Google"),
    ("bing.com", "Bing"),
    ("duckduckgo.com", "DuckDuckGo"),
    ("search.yahoo.com", "Yahoo!"),
    ("mail.yahoo.com", "Yahoo! Mail"),
    ("yahoo.com", "Yahoo!"),
    ("ecosia.org", "Ecosia"),
    ("qwant.com", "Qwant"),
    ("startpage.com", "Startpage"),
    ("search.brave.com", "Brave Search"),
    ("kagi.com", "Kagi"),
    ("baidu.com", "Baidu"),
    ("naver.com", "Naver"),
    ("yandex.ru", "Yandex"),
    ("yandex.com", "Yandex"),
    ("chatgpt.com", "ChatGPT"),
    ("perplexity.ai", "Perplexity"),
    ("facebook.com", "Facebook"),
    ("fb.com", "Facebook"),
    ("fb.me", "Facebook"),
    ("instagram.com", "Instagram"),
    ("threads.net", "Threads"),
    ("t.co", "Twitter"),
    ("twitter.com", "Twitter"),
    ("x.com", "Twitter"),
    ("linkedin.com", "LinkedIn"),
    ("lnkd.in", "LinkedIn"),
    ("reddit.com", "Reddit"),
    ("news.ycombinator.com", "Hacker News"),
    ("lobste.rs", "Lobsters"),
    ("github.com", "GitHub"),
    ("gitlab.com", "GitLab"),
    ("stackoverflow.com", "Stack Overflow"),
    ("youtube.com", "YouTube"),
    ("youtu.be", "YouTube"),
    ("pinterest.com", "Pinterest"),
    ("tiktok.com", "TikTok"),
    ("bsky.app", "Bluesky"),
    ("mastodon.social", "Mastodon"),
    ("t.me", "Telegram"),
    ("web.telegram.org", "Telegram"),
    ("web.whatsapp.com", "WhatsApp"),
    ("discord.com", "Discord"),
    ("slack.com", "Slack"),
    ("wikipedia.org", "Wikipedia"),
    ("medium.com", "Medium"),
    ("substack.com", "Substack"),
    ("producthunt.com", "Product Hunt"),
    ("outlook.live.com", "Outlook.com"),
    ("outlook.office.com", "Outlook.com"),
    ("mail.proton.me", "Proton Mail"),
];

/// Lower-case `utm_source` spellings of known services.
const UTM_ALIASES: &[(&str, &str)] = &[
    ("google", "Google"),
    ("bing", "Bing"),
    ("duckduckgo", "DuckDuckGo"),
    ("facebook", "Facebook"),
    ("fb", "Facebook"),
    ("instagram", "Instagram"),
    ("ig", "Instagram"),
    ("twitter", "Twitter"),
    ("x", "Twitter"),
    ("linkedin", "LinkedIn"),
    ("reddit", "Reddit"),
    ("hackernews", "Hacker News"),
    ("hn", "Hacker News"),
    ("github", "GitHub"),
    ("youtube", "YouTube"),
    ("bluesky", "Bluesky"),
    ("mastodon", "Mastodon"),
    ("newsletter", "Newsletter"),
];

/// The name of a well-known service behind `host`, if any.
pub fn known_source(host: &str) -> Option<&'static str> {
    let host = strip_www(host);
    // Country search domains: google.de, google.co.uk, yandex.ua, bing.co.jp…
    for (prefix, name) in [
        ("google.", "Google"),
        ("yandex.", "Yandex"),
        ("bing.", "Bing"),
    ] {
        if host.starts_with(prefix) && host.len() - prefix.len() <= 6 {
            return Some(name);
        }
    }
    KNOWN
        .iter()
        .find(|(suffix, _)| {
            host == *suffix
                || host
                    .strip_suffix(suffix)
                    .is_some_and(|rest| rest.ends_with('.'))
        })
        .map(|(_, name)| *name)
}

/// Attributes a visit that lands on `page` coming from `referrer`.
pub fn attribute(page: &Url, referrer: Option<&Url>) -> Attribution {
    let mut a = Attribution::default();
    let mut ref_param = None;
    let mut click_source = None;
    for (k, v) in page.query_pairs() {
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        let slot = match k.as_ref() {
            "utm_medium" => &mut a.utm_medium,
            "utm_source" => &mut a.utm_source,
            "utm_campaign" => &mut a.utm_campaign,
            "utm_term" => &mut a.utm_term,
            "utm_content" => &mut a.utm_content,
            "ref" | "source" => &mut ref_param,
            "gclid" | "gbraid" | "wbraid" => {
                click_source = Some("Google");
                continue;
            }
            "msclkid" => {
                click_source = Some("Bing");
                continue;
            }
            "fbclid" => {
                click_source = Some("Facebook");
                continue;
            }
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(v.chars().take(300).collect());
        }
    }
    let page_host = strip_www(page.host_str().unwrap_or_default());
    let referrer = referrer.filter(|r| strip_www(r.host_str().unwrap_or_default()) != page_host);
    if let Some(r) = referrer {
        let host = strip_www(r.host_str().unwrap_or_default()).to_ascii_lowercase();
        let path = r.path().trim_end_matches('/');
        a.referrer = Some(format!("{host}{path}"));
        a.source = Some(known_source(&host).map(str::to_string).unwrap_or(host));
    }
    // Tags the site owner set win over what the browser reports.
    let tagged = a.utm_source.clone().or(ref_param);
    if let Some(tag) = tagged {
        let alias = UTM_ALIASES
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(&tag))
            .map(|(_, name)| name.to_string());
        a.source = Some(
            alias
                .or_else(|| known_source(&tag).map(str::to_string))
                .unwrap_or(tag),
        );
    } else if a.source.is_none() {
        a.source = click_source.map(str::to_string);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn known_sources() {
        assert_eq!(known_source("www.google.co.uk"), Some("Google"));
        assert_eq!(known_source("mail.google.com"), Some("Gmail"));
        assert_eq!(known_source("old.reddit.com"), Some("Reddit"));
        assert_eq!(known_source("news.ycombinator.com"), Some("Hacker News"));
        assert_eq!(known_source("notreddit.com"), None);
    }

    #[test]
    fn referrer_utm_and_self() {
        let page = url("https://example.com/post?utm_medium=social&utm_campaign=launch");
        let a = attribute(&page, Some(&url("https://news.ycombinator.com/item?id=1")));
        assert_eq!(a.source.as_deref(), Some("Hacker News"));
        assert_eq!(a.referrer.as_deref(), Some("news.ycombinator.com/item"));
        assert_eq!(a.utm_medium.as_deref(), Some("social"));
        let a = attribute(
            &url("https://example.com/?utm_source=newsletter"),
            Some(&url("https://google.com/")),
        );
        assert_eq!(a.source.as_deref(), Some("Newsletter"));
        let a = attribute(
            &url("https://example.com/b"),
            Some(&url("https://www.example.com/a")),
        );
        assert_eq!(a, Attribution::default());
        let a = attribute(&url("https://example.com/?gclid=abc"), None);
        assert_eq!(a.source.as_deref(), Some("Google"));
    }
}
