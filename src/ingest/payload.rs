//! The Plausible-compatible event payload: parsing and every limit on it.
//!
//! Field names may be short (`n`, `u`, `d`, `r`, `w`, `p`, `$`, `i`, `h`) or
//! long (`name`, `url`, `domain`, `referrer`, `screen_width`, `props`,
//! `revenue`, `interactive`, `hashMode`). Anything that breaks a limit is
//! refused with the field it concerns; nothing is silently truncated.

use std::borrow::Cow;
use std::fmt;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use url::Url;

use super::IngestError;

pub const MAX_BODY_BYTES: usize = 64 * 1024;
const MAX_NAME_CHARS: usize = 120;
const MAX_URL_BYTES: usize = 2000;
const MAX_DOMAIN_BYTES: usize = 253;
/// Sites one event may go to. Plausible's tracker sends a handful; each one
/// costs a site lookup (a query when it is not cached), so a list of
/// thousands would hold a worker.
pub const MAX_DOMAINS: usize = 10;
const MAX_PROPS: usize = 30;
const MAX_PROP_KEY_BYTES: usize = 300;
const MAX_PROP_VALUE_BYTES: usize = 2000;
const MAX_SCREEN_WIDTH: i64 = 100_000;
/// One engagement report covers at most a day of visible time.
const MAX_ENGAGED_MS: i64 = 24 * 3600 * 1000;

/// What kind of event this is; engagement reports carry their measurements.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    Pageview,
    Custom,
    Engagement { scroll_depth: i64, engaged_ms: i64 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Revenue {
    pub amount: String,
    pub currency: String,
}

/// A validated event, before enrichment.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPayload {
    pub name: String,
    pub kind: EventKind,
    pub url: Url,
    /// Site domains, lower-case, without `www.`.
    pub domains: Vec<String>,
    pub referrer: Option<Url>,
    pub screen_width: Option<i64>,
    /// Scalars as strings, in the order sent.
    pub props: Vec<(String, String)>,
    pub revenue: Option<Revenue>,
    pub interactive: bool,
    pub hash_mode: bool,
}

impl EventPayload {
    /// The page path as stored: the URL path, plus the fragment in hash mode.
    pub fn path(&self) -> String {
        match (self.hash_mode, self.url.fragment()) {
            (true, Some(f)) if !f.is_empty() => format!("{}#{}", self.url.path(), f),
            _ => self.url.path().to_string(),
        }
    }

    /// The page host, lower-case, without `www.`.
    pub fn hostname(&self) -> String {
        strip_www(self.url.host_str().unwrap_or_default()).to_string()
    }
}

/// Parses a POST body.
pub fn parse_body(body: &[u8]) -> Result<EventPayload, IngestError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(IngestError::TooLarge {
            limit: MAX_BODY_BYTES,
        });
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| IngestError::invalid("body", "is not valid UTF-8"))?;
    if text.trim().is_empty() {
        return Err(IngestError::invalid("body", "is empty"));
    }
    // serde_json refuses nesting deeper than 128 levels by itself.
    let fields: Fields<'_> = serde_json::from_str(text).map_err(|e| {
        // A well-formed body of the wrong type (an array, a string...) is a
        // data error; every other error is malformed JSON.
        if e.is_data() {
            IngestError::invalid("body", "must be a JSON object")
        } else {
            IngestError::invalid("body", format!("is not valid JSON ({e})"))
        }
    })?;
    from_fields(&fields)
}

/// A body's top-level fields, in the order sent. Strings borrow from the
/// body unless an escape forces a copy: building a `serde_json::Value` map
/// (a copy of every key and string) was a tenth of the request's CPU time.
struct Fields<'a>(Vec<(Cow<'a, str>, Field<'a>)>);

impl<'a> Fields<'a> {
    /// The field named `short` or `long`, unless null. A short name wins;
    /// of repeated names the last counts, as in a JSON object read into a map.
    fn get(&self, short: &str, long: &str) -> Option<&Field<'a>> {
        let find = |name: &str| self.0.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v);
        find(short).or_else(|| find(long)).filter(|v| !v.is_null())
    }

    fn has(&self, short: &str, long: &str) -> bool {
        self.0.iter().any(|(k, _)| k == short || k == long)
    }
}

/// One field's value: a string (borrowed where it can be), or any other
/// JSON value.
enum Field<'a> {
    Str(Cow<'a, str>),
    Value(Value),
}

impl Field<'_> {
    fn is_null(&self) -> bool {
        matches!(self, Field::Value(Value::Null))
    }

    fn as_i64(&self) -> Option<i64> {
        match self {
            Field::Value(v) => v.as_i64(),
            Field::Str(_) => None,
        }
    }
}

impl<'de> Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Field<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Field<'de>, E> {
                Ok(Field::Str(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Field<'de>, E> {
                Ok(Field::Str(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Field<'de>, E> {
                Ok(Field::Str(Cow::Owned(s)))
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Field<'de>, E> {
                Ok(Field::Value(Value::Bool(b)))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Field<'de>, E> {
                Ok(Field::Value(Value::from(n)))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Field<'de>, E> {
                Ok(Field::Value(Value::from(n)))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Field<'de>, E> {
                Ok(Field::Value(Value::from(n)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Field<'de>, E> {
                Ok(Field::Value(Value::Null))
            }
            // Nested values are read by the same deserializer, so its depth
            // limit still applies.
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Field<'de>, A::Error> {
                Value::deserialize(MapAccessDeserializer::new(map)).map(Field::Value)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Field<'de>, A::Error> {
                Value::deserialize(SeqAccessDeserializer::new(seq)).map(Field::Value)
            }
        }
        d.deserialize_any(V)
    }
}

/// Only an object: anything else is refused by the visitor's defaults.
impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut fields = Vec::new();
                while let Some((k, v)) = map.next_entry::<Field<'de>, Field<'de>>()? {
                    // JSON keys are strings.
                    let Field::Str(k) = k else {
                        return Err(de::Error::custom("a key is not a string"));
                    };
                    fields.push((k, v));
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(V)
    }
}

/// Parses the query string of the no-JS pixel. `page_url` (the `Referer` of
/// the image request) stands in for a missing `u`.
pub fn parse_query(query: &str, page_url: Option<&str>) -> Result<EventPayload, IngestError> {
    let mut fields = Fields(Vec::new());
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        let v = match k.as_ref() {
            "w" | "screen_width" => match v.parse::<i64>() {
                Ok(n) => Field::Value(Value::from(n)),
                Err(_) => Field::Str(v),
            },
            _ => Field::Str(v),
        };
        fields.0.push((k, v));
    }
    if !fields.has("n", "name") {
        fields.0.push(("n".into(), Field::Str("pageview".into())));
    }
    if !fields.has("u", "url")
        && let Some(page) = page_url
    {
        fields.0.push(("u".into(), Field::Str(page.into())));
    }
    from_fields(&fields)
}

fn from_fields(map: &Fields<'_>) -> Result<EventPayload, IngestError> {
    let name = match map.get("n", "name") {
        None => return Err(IngestError::invalid("name", "is required")),
        Some(Field::Str(s)) => s.trim().to_string(),
        Some(_) => return Err(IngestError::invalid("name", "must be a string")),
    };
    if name.is_empty() {
        return Err(IngestError::invalid("name", "must not be empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(IngestError::invalid(
            "name",
            format!("is longer than {MAX_NAME_CHARS} characters"),
        ));
    }
    check_text("name", &name)?;

    let url = match map.get("u", "url") {
        None => return Err(IngestError::invalid("url", "is required")),
        Some(Field::Str(s)) => parse_http_url("url", s)?,
        Some(_) => return Err(IngestError::invalid("url", "must be a string")),
    };

    let domains = match map.get("d", "domain") {
        None => vec![strip_www(url.host_str().unwrap_or_default()).to_string()],
        Some(Field::Str(s)) => parse_domains(s)?,
        Some(_) => return Err(IngestError::invalid("domain", "must be a string")),
    };

    let referrer = match map.get("r", "referrer") {
        None => None,
        Some(Field::Str(s)) => {
            check_text("referrer", s)?;
            if s.len() > MAX_URL_BYTES {
                return Err(IngestError::invalid(
                    "referrer",
                    format!("is longer than {MAX_URL_BYTES} bytes"),
                ));
            }
            // A referrer that is not an http(s) URL carries no source: ignore it.
            Url::parse(s)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        }
        Some(_) => return Err(IngestError::invalid("referrer", "must be a string")),
    };

    let screen_width = match map.get("w", "screen_width") {
        None => None,
        Some(v) => Some(
            v.as_i64()
                .filter(|w| (0..=MAX_SCREEN_WIDTH).contains(w))
                .ok_or_else(|| {
                    IngestError::invalid(
                        "screen_width",
                        format!("must be an integer from 0 to {MAX_SCREEN_WIDTH}"),
                    )
                })?,
        ),
    };

    let props = match map.get("p", "props") {
        None => Vec::new(),
        Some(Field::Value(Value::Object(m))) => parse_props(m)?,
        Some(Field::Str(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => parse_props(&m)?,
            _ => {
                return Err(IngestError::invalid(
                    "props",
                    "must be an object or a JSON string of an object",
                ));
            }
        },
        Some(_) => {
            return Err(IngestError::invalid(
                "props",
                "must be an object or a JSON string of an object",
            ));
        }
    };

    let revenue = match map.get("$", "revenue") {
        None => None,
        Some(Field::Value(Value::Object(m))) => Some(parse_revenue(m)?),
        Some(Field::Str(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => Some(parse_revenue(&m)?),
            _ => return Err(IngestError::invalid("revenue", "must be an object")),
        },
        Some(_) => return Err(IngestError::invalid("revenue", "must be an object")),
    };

    let interactive = match map.get("i", "interactive") {
        None => true,
        Some(Field::Value(Value::Bool(b))) => *b,
        Some(_) => return Err(IngestError::invalid("interactive", "must be true or false")),
    };

    let hash_mode = match map.get("h", "hashMode") {
        None => false,
        Some(Field::Value(Value::Bool(b))) => *b,
        Some(Field::Value(Value::Number(n))) => n.as_i64().unwrap_or(0) != 0,
        Some(_) => return Err(IngestError::invalid("hashMode", "must be a boolean or 0/1")),
    };

    let kind = if name == "pageview" {
        EventKind::Pageview
    } else if name == "engagement" {
        let scroll_depth = int_in(map, "sd", "scroll_depth", 0, 100)?.unwrap_or(0);
        let engaged_ms = int_in(map, "e", "engagement_time", 0, MAX_ENGAGED_MS)?.unwrap_or(0);
        EventKind::Engagement {
            scroll_depth,
            engaged_ms,
        }
    } else {
        EventKind::Custom
    };

    Ok(EventPayload {
        name,
        kind,
        url,
        domains,
        referrer,
        screen_width,
        props,
        revenue,
        interactive,
        hash_mode,
    })
}

fn int_in(
    map: &Fields<'_>,
    short: &str,
    long: &'static str,
    min: i64,
    max: i64,
) -> Result<Option<i64>, IngestError> {
    match map.get(short, long) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .filter(|n| (min..=max).contains(n))
            .map(Some)
            .ok_or_else(|| {
                IngestError::invalid(long, format!("must be an integer from {min} to {max}"))
            }),
    }
}

fn parse_http_url(field: &'static str, s: &str) -> Result<Url, IngestError> {
    check_text(field, s)?;
    if s.len() > MAX_URL_BYTES {
        return Err(IngestError::invalid(
            field,
            format!("is longer than {MAX_URL_BYTES} bytes"),
        ));
    }
    let url =
        Url::parse(s).map_err(|e| IngestError::invalid(field, format!("is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(IngestError::invalid(field, "must be an http or https URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(IngestError::invalid(field, "must have a host"));
    }
    Ok(url)
}

fn parse_domains(s: &str) -> Result<Vec<String>, IngestError> {
    check_text("domain", s)?;
    let mut out: Vec<String> = Vec::new();
    for (i, d) in s.split(',').enumerate() {
        // Counted as sent, duplicates included, and refused at the first
        // entry too many, before the rest is read.
        if i == MAX_DOMAINS {
            return Err(IngestError::invalid(
                "domain",
                format!(
                    "lists more than {MAX_DOMAINS} sites; an event goes to at most {MAX_DOMAINS}"
                ),
            ));
        }
        let d = strip_www(d.trim()).to_ascii_lowercase();
        if d.is_empty() {
            return Err(IngestError::invalid("domain", "contains an empty domain"));
        }
        if d.len() > MAX_DOMAIN_BYTES {
            return Err(IngestError::invalid(
                "domain",
                format!("a domain is longer than {MAX_DOMAIN_BYTES} bytes"),
            ));
        }
        // At most MAX_DOMAINS kept, so looking through them is bounded work.
        if !out.contains(&d) {
            out.push(d);
        }
    }
    Ok(out)
}

/// A props object as strings, under ingest's limits (numbers and booleans
/// as their text, nulls left out); imports store props by the same rules.
pub fn parse_props(m: &Map<String, Value>) -> Result<Vec<(String, String)>, IngestError> {
    let mut out = Vec::with_capacity(m.len());
    for (k, v) in m {
        let v = match v {
            Value::Null => continue,
            Value::String(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::Array(_) | Value::Object(_) => {
                return Err(IngestError::invalid(
                    "props",
                    format!("{k:?}: values must be strings, numbers or booleans"),
                ));
            }
        };
        if k.trim().is_empty() {
            return Err(IngestError::invalid("props", "keys must not be empty"));
        }
        if k.len() > MAX_PROP_KEY_BYTES {
            return Err(IngestError::invalid(
                "props",
                format!("keys must be at most {MAX_PROP_KEY_BYTES} bytes"),
            ));
        }
        if v.len() > MAX_PROP_VALUE_BYTES {
            return Err(IngestError::invalid(
                "props",
                format!("{k:?}: values must be at most {MAX_PROP_VALUE_BYTES} bytes"),
            ));
        }
        check_text("props", k)?;
        check_text("props", &v)?;
        out.push((k.clone(), v));
    }
    if out.len() > MAX_PROPS {
        return Err(IngestError::invalid(
            "props",
            format!("at most {MAX_PROPS} properties are allowed"),
        ));
    }
    Ok(out)
}

fn parse_revenue(m: &Map<String, Value>) -> Result<Revenue, IngestError> {
    let amount = match m.get("amount") {
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(IngestError::invalid("revenue", "amount is required")),
    };
    let valid_amount = amount.len() <= 32
        && amount.parse::<f64>().is_ok_and(f64::is_finite)
        && amount
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == '-');
    if !valid_amount {
        return Err(IngestError::invalid(
            "revenue",
            "amount must be a decimal number",
        ));
    }
    let currency = match m.get("currency") {
        Some(Value::String(s)) if s.len() == 3 && s.chars().all(|c| c.is_ascii_alphabetic()) => {
            s.to_ascii_uppercase()
        }
        _ => {
            return Err(IngestError::invalid(
                "revenue",
                "currency must be a three-letter ISO 4217 code",
            ));
        }
    };
    Ok(Revenue { amount, currency })
}

/// Refuses control characters: they have no place in names, URLs or props
/// and are a classic way to forge log lines or break exports.
fn check_text(field: &'static str, s: &str) -> Result<(), IngestError> {
    if s.chars().any(char::is_control) {
        return Err(IngestError::invalid(field, "contains control characters"));
    }
    Ok(())
}

pub fn strip_www(host: &str) -> &str {
    host.strip_prefix("www.").unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> EventPayload {
        parse_body(body.as_bytes()).unwrap()
    }

    fn err_field(body: &str) -> &'static str {
        match parse_body(body.as_bytes()).unwrap_err() {
            IngestError::Invalid { field, .. } => field,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn short_and_long_names() {
        let a = ok(
            r#"{"n":"pageview","u":"https://www.example.com/a?x=1#top","r":"https://google.com/","w":1280}"#,
        );
        let b = ok(
            r#"{"name":"pageview","url":"https://www.example.com/a?x=1#top","referrer":"https://google.com/","screen_width":1280}"#,
        );
        assert_eq!(a, b);
        assert_eq!(a.domains, vec!["example.com"]);
        assert_eq!(a.path(), "/a");
        assert_eq!(a.screen_width, Some(1280));
    }

    #[test]
    fn hash_mode_keeps_fragment() {
        let p = ok(r##"{"n":"pageview","u":"https://example.com/app#/settings","h":1}"##);
        assert_eq!(p.path(), "/app#/settings");
    }

    #[test]
    fn props_object_or_string() {
        let a = ok(
            r#"{"n":"Signup","u":"https://e.com/","p":{"plan":"pro","seats":3,"trial":true,"x":null}}"#,
        );
        let b = ok(
            r#"{"n":"Signup","u":"https://e.com/","p":"{\"plan\":\"pro\",\"seats\":3,\"trial\":true}"}"#,
        );
        assert_eq!(a.props, b.props);
        assert_eq!(a.props.len(), 3);
    }

    #[test]
    fn limits() {
        assert_eq!(err_field(r#"{"u":"https://e.com/"}"#), "name");
        assert_eq!(err_field(r#"{"n":"pageview"}"#), "url");
        assert_eq!(
            err_field(r#"{"n":"pageview","u":"javascript:alert(1)"}"#),
            "url"
        );
        assert_eq!(err_field(r#"{"n":"pageview","u":"ftp://e.com/"}"#), "url");
        let long = "x".repeat(121);
        assert_eq!(
            err_field(&format!(r#"{{"n":"{long}","u":"https://e.com/"}}"#)),
            "name"
        );
        assert_eq!(
            err_field("{\"n\":\"a\\u0000b\",\"u\":\"https://e.com/\"}"),
            "name"
        );
        let many: Vec<String> = (0..31).map(|i| format!("\"k{i}\":1")).collect();
        let body = format!(
            r#"{{"n":"x","u":"https://e.com/","p":{{{}}}}}"#,
            many.join(",")
        );
        assert_eq!(err_field(&body), "props");
        assert_eq!(
            err_field(r#"{"n":"x","u":"https://e.com/","p":{"a":[1]}}"#),
            "props"
        );
        assert_eq!(
            err_field(r#"{"n":"x","u":"https://e.com/","$":{"amount":"abc","currency":"EUR"}}"#),
            "revenue"
        );
        assert_eq!(
            err_field(r#"{"n":"engagement","u":"https://e.com/","sd":101}"#),
            "scroll_depth"
        );
        assert_eq!(err_field("[1,2]"), "body");
        assert_eq!(err_field(""), "body");
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(err_field(&deep), "body");
        assert!(matches!(
            parse_body(&vec![b' '; MAX_BODY_BYTES + 1]),
            Err(IngestError::TooLarge { .. })
        ));
        assert_eq!(
            match parse_body(b"{\"n\":\"\xff\"}").unwrap_err() {
                IngestError::Invalid { field, .. } => field,
                _ => "",
            },
            "body"
        );
    }

    #[test]
    fn revenue_and_engagement() {
        let p =
            ok(r#"{"n":"Purchase","u":"https://e.com/","$":{"amount":"12.5","currency":"eur"}}"#);
        assert_eq!(
            p.revenue.unwrap(),
            Revenue {
                amount: "12.5".into(),
                currency: "EUR".into()
            }
        );
        let e = ok(r#"{"n":"engagement","u":"https://e.com/","sd":80,"e":4200}"#);
        assert_eq!(
            e.kind,
            EventKind::Engagement {
                scroll_depth: 80,
                engaged_ms: 4200
            }
        );
    }

    #[test]
    fn several_domains() {
        let p = ok(r#"{"n":"pageview","u":"https://e.com/","d":"a.com, www.b.com,a.com"}"#);
        assert_eq!(p.domains, vec!["a.com", "b.com"]);
    }

    #[test]
    fn a_domain_list_is_bounded() {
        let list = |n: usize| (0..n).map(|i| format!("s{i}")).collect::<Vec<_>>();
        let body = |d: &[String]| {
            format!(
                r#"{{"n":"pageview","u":"https://e.com/","d":"{}"}}"#,
                d.join(",")
            )
        };
        assert_eq!(ok(&body(&list(10))).domains.len(), 10);
        for n in [11, 10_000] {
            assert_eq!(err_field(&body(&list(n))), "domain", "{n} domains");
        }
        // Entries count before duplicates are dropped.
        let same = vec!["a.com".to_string(); 11];
        assert_eq!(err_field(&body(&same)), "domain");
    }

    #[test]
    fn escaped_repeated_and_odd_bodies() {
        // Escapes in keys and strings are read as written.
        let p = ok(r#"{"\u006e":"sign\u0075p","u":"https:\/\/example.com\/a\"b"}"#);
        assert_eq!(p.name, "signup");
        assert_eq!(p.url.path(), "/a%22b");
        // Of a repeated name the last counts; a null short name hides the
        // long one, as a null field is absent.
        let p = ok(r#"{"n":"a","n":"b","u":"https://example.com/"}"#);
        assert_eq!(p.name, "b");
        assert_eq!(
            err_field(r#"{"n":null,"name":"x","u":"https://example.com/"}"#),
            "name"
        );
        let reason = |body: &str| match parse_body(body.as_bytes()).unwrap_err() {
            IngestError::Invalid { field, reason } => format!("{field} {reason}"),
            other => panic!("unexpected {other:?}"),
        };
        for body in [r#"[1,{"a":2}]"#, r#""text""#, "42", "true", "null"] {
            assert_eq!(reason(body), "body must be a JSON object", "{body}");
        }
        assert!(reason(r#"{"n":"x""#).starts_with("body is not valid JSON"));
        // Depth is limited under any key, known or not.
        let deep = format!(
            r#"{{"n":"x","u":"https://example.com/","zz":{}1{}}}"#,
            "[".repeat(300),
            "]".repeat(300)
        );
        assert_eq!(err_field(&deep), "body");
        assert!(parse_body(b"{\"n\":\"x\",").is_err());
    }

    #[test]
    fn pixel_query() {
        let p = parse_query(
            "d=e.com&r=https%3A%2F%2Fnews.ycombinator.com%2F",
            Some("https://e.com/post"),
        )
        .unwrap();
        assert_eq!(p.name, "pageview");
        assert_eq!(p.path(), "/post");
        assert!(parse_query("d=e.com", None).is_err());
    }
}
