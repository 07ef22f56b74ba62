//! What a report asks and what it gets back. Copied from Tally's
//! `src/report/model.rs` (minus `VisitColumn::of`, which reads a
//! `VisitRecord`), so that this prototype answers in Tally's own types and
//! can move into `src/report/` by deleting this file.

/// A half-open range of Unix seconds, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub start: i64,
    pub end: i64,
}

/// Totals of one site over a range. Event counts cover events in the range;
/// visit counts cover visits that started in it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub visitors: i64,
    pub pageviews: i64,
    pub events: i64,
    pub visits: i64,
    pub bounces: i64,
    pub visit_duration_sum: i64,
}

/// What a breakdown groups by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dimension {
    Page,
    EventName,
    Prop(String),
    Visit(VisitColumn),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VisitColumn {
    EntryPage,
    ExitPage,
    Source,
    Referrer,
    UtmMedium,
    UtmSource,
    UtmCampaign,
    UtmTerm,
    UtmContent,
    Device,
    Browser,
    BrowserVersion,
    Os,
    OsVersion,
    Country,
    Region,
    City,
}

impl VisitColumn {
    pub const ALL: [VisitColumn; 17] = [
        VisitColumn::EntryPage,
        VisitColumn::ExitPage,
        VisitColumn::Source,
        VisitColumn::Referrer,
        VisitColumn::UtmMedium,
        VisitColumn::UtmSource,
        VisitColumn::UtmCampaign,
        VisitColumn::UtmTerm,
        VisitColumn::UtmContent,
        VisitColumn::Device,
        VisitColumn::Browser,
        VisitColumn::BrowserVersion,
        VisitColumn::Os,
        VisitColumn::OsVersion,
        VisitColumn::Country,
        VisitColumn::Region,
        VisitColumn::City,
    ];

    pub fn name(self) -> &'static str {
        match self {
            VisitColumn::EntryPage => "entry_page",
            VisitColumn::ExitPage => "exit_page",
            VisitColumn::Source => "source",
            VisitColumn::Referrer => "referrer",
            VisitColumn::UtmMedium => "utm_medium",
            VisitColumn::UtmSource => "utm_source",
            VisitColumn::UtmCampaign => "utm_campaign",
            VisitColumn::UtmTerm => "utm_term",
            VisitColumn::UtmContent => "utm_content",
            VisitColumn::Device => "device",
            VisitColumn::Browser => "browser",
            VisitColumn::BrowserVersion => "browser_version",
            VisitColumn::Os => "os",
            VisitColumn::OsVersion => "os_version",
            VisitColumn::Country => "country",
            VisitColumn::Region => "region",
            VisitColumn::City => "city",
        }
    }

    pub fn from_name(name: &str) -> Option<VisitColumn> {
        VisitColumn::ALL.into_iter().find(|c| c.name() == name)
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// One value of a breakdown.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BreakdownRow {
    pub value: Option<String>,
    pub visitors: i64,
    pub visits: i64,
    pub pageviews: i64,
    pub events: i64,
    pub bounces: i64,
    pub visit_duration_sum: i64,
}

/// Tally's `count_leading`, unchanged: counts the visitors of the leading
/// values of a ranking by an upper bound, widening until settled.
pub fn count_leading<E>(
    bounds: &[i64],
    need: usize,
    mut count: impl FnMut(std::ops::Range<usize>) -> Result<Vec<i64>, E>,
) -> Result<Vec<i64>, E> {
    let mut visitors: Vec<i64> = Vec::new();
    let mut take = (need + need / 2 + 5).min(bounds.len());
    loop {
        let counted = count(visitors.len()..take)?;
        visitors.extend(counted);
        let mut top = visitors.clone();
        top.sort_unstable_by(|a, b| b.cmp(a));
        let settled =
            take == bounds.len() || (need > 0 && top.len() >= need && top[need - 1] > bounds[take]);
        if settled {
            return Ok(visitors);
        }
        take = (take * 4).min(bounds.len());
    }
}

/// Events that are not user actions: never counted, in any read model.
pub const NOT_AN_ACTION: &str = "engagement";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FilterField {
    Page,
    EventName,
    Prop(String),
    Visit(VisitColumn),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilterOp {
    Is,
    IsNot,
    Contains,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Filter {
    pub field: FilterField,
    pub op: FilterOp,
    pub values: Vec<Option<String>>,
}

/// Whether a value (or its absence) passes `f`, as Tally's SQL does
/// (copied from `src/report/sqlite/filter.rs`).
pub fn value_matches(f: &Filter, value: Option<&str>) -> bool {
    let any = match value {
        None => {
            let has_none = f.values.iter().any(Option::is_none);
            return match f.op {
                FilterOp::IsNot => !has_none,
                _ => has_none,
            };
        }
        Some(value) => f.values.iter().any(|want| match want {
            None => false,
            Some(w) => match f.op {
                FilterOp::Contains => value.to_ascii_lowercase().contains(&w.to_ascii_lowercase()),
                _ if f.field == FilterField::Page && w.contains('*') => {
                    glob(&w.replace("**", "*"), value)
                }
                _ => value == w,
            },
        }),
    };
    if f.op == FilterOp::IsNot { !any } else { any }
}

/// `*` matches any run of characters; everything else is literal.
pub fn glob(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

const NONE_LABELS: &[&str] = &["Direct / None", "(none)"];

/// The `filters` parameter (Tally's `query::filters::parse`, without goals).
pub fn parse_filters(param: &str) -> Result<Vec<Filter>, String> {
    let mut out = Vec::new();
    for condition in param.split(';').map(str::trim).filter(|c| !c.is_empty()) {
        let (at, op, len) = ["==", "!=", "~"]
            .iter()
            .filter_map(|t| condition.find(t).map(|at| (at, *t, t.len())))
            .min_by_key(|(at, _, _)| *at)
            .ok_or_else(|| format!("filters: `{condition}` has no operator"))?;
        let property = condition[..at].trim();
        let value = condition[at + len..].trim();
        let op = match op {
            "==" => FilterOp::Is,
            "!=" => FilterOp::IsNot,
            _ => FilterOp::Contains,
        };
        let field = match property {
            "event:page" => FilterField::Page,
            "event:name" => FilterField::EventName,
            _ => match property.strip_prefix("event:props:") {
                Some(key) if !key.is_empty() => FilterField::Prop(key.to_string()),
                _ => FilterField::Visit(
                    property
                        .strip_prefix("visit:")
                        .and_then(VisitColumn::from_name)
                        .ok_or_else(|| format!("filters: unknown property `{property}`"))?,
                ),
            },
        };
        let values = value
            .split('|')
            .map(str::trim)
            .map(|v| {
                let none = matches!(field, FilterField::Visit(_)) && NONE_LABELS.contains(&v);
                (!none).then(|| v.to_string())
            })
            .collect();
        out.push(Filter { field, op, values });
    }
    Ok(out)
}
