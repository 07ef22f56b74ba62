//! The dashboard's state in its URL, and how numbers and charts are shown.
//!
//! Every view is a URL: period, date, filters, comparison, charted metric and
//! the tab of each panel live in the query string, in the Stats API's words,
//! so links can be shared and the back button works.

use std::collections::HashMap;

use url::form_urlencoded;

use crate::query::Params;

/// A link of the page's navigation (periods, tabs), marked when it is the
/// current one.
pub struct Link {
    pub label: String,
    pub href: String,
    pub active: bool,
}

/// Panels whose tab the URL may choose, by query key.
pub const TAB_KEYS: &[&str] = &["sources", "pages", "locations", "devices", "goals"];

/// An active filter as the page shows it, with the link that removes it.
pub struct Chip {
    pub label: String,
    pub remove_href: String,
}

/// One condition of `filters`: `visit:source==Google`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub property: String,
    pub op: &'static str,
    pub value: String,
}

impl Condition {
    fn parse(text: &str) -> Option<Condition> {
        let (at, op) = ["==", "!=", "~"]
            .iter()
            .filter_map(|op| text.find(op).map(|at| (at, *op)))
            .min_by_key(|(at, _)| *at)?;
        Some(Condition {
            property: text[..at].trim().to_string(),
            op,
            value: text[at + op.len()..].trim().to_string(),
        })
    }

    fn text(&self) -> String {
        format!("{}{}{}", self.property, self.op, self.value)
    }

    /// "Source is Google", for a filter chip.
    pub fn label(&self) -> String {
        let verb = match self.op {
            "==" => "is",
            "!=" => "is not",
            _ => "contains",
        };
        format!("{} {verb} {}", property_label(&self.property), self.value)
    }
}

/// How a property is named on screen.
pub fn property_label(property: &str) -> String {
    let name = property
        .strip_prefix("visit:")
        .or_else(|| property.strip_prefix("event:"))
        .unwrap_or(property);
    match name {
        "page" => "Page".into(),
        "entry_page" => "Entry page".into(),
        "exit_page" => "Exit page".into(),
        "utm_medium" => "UTM medium".into(),
        "utm_source" => "UTM source".into(),
        "utm_campaign" => "UTM campaign".into(),
        "utm_term" => "UTM term".into(),
        "utm_content" => "UTM content".into(),
        "os" => "Operating system".into(),
        "os_version" => "OS version".into(),
        "name" => "Event".into(),
        other => {
            let other = other
                .strip_prefix("props:")
                .unwrap_or(other)
                .replace('_', " ");
            let mut c = other.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect(),
                None => String::new(),
            }
        }
    }
}

/// Everything a dashboard URL can say.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewState {
    pub period: String,
    pub date: Option<String>,
    pub filters: Vec<Condition>,
    pub compare: bool,
    /// The metric the main chart shows.
    pub graph: String,
    /// Chosen tab per panel key.
    pub tabs: Vec<(String, String)>,
}

/// The headline metrics, in the order the dashboard shows them; any of them
/// can be charted.
pub const TOP_STATS: &[(&str, &str)] = &[
    ("visitors", "Unique visitors"),
    ("visits", "Total visits"),
    ("pageviews", "Total pageviews"),
    ("views_per_visit", "Views per visit"),
    ("bounce_rate", "Bounce rate"),
    ("visit_duration", "Visit duration"),
];

impl ViewState {
    pub fn from_query(q: &HashMap<String, String>) -> ViewState {
        let filters = q
            .get("filters")
            .map(|f| {
                f.split(';')
                    .filter(|c| !c.trim().is_empty())
                    .filter_map(Condition::parse)
                    .collect()
            })
            .unwrap_or_default();
        let graph = q
            .get("graph")
            .filter(|g| TOP_STATS.iter().any(|(m, _)| m == g))
            .cloned()
            .unwrap_or_else(|| "visitors".into());
        let tabs = TAB_KEYS
            .iter()
            .filter_map(|k| q.get(*k).map(|v| (k.to_string(), v.clone())))
            .collect();
        ViewState {
            period: q.get("period").cloned().unwrap_or_else(|| "30d".into()),
            date: q.get("date").cloned().filter(|d| !d.is_empty()),
            filters,
            compare: q.get("compare").is_some_and(|c| c == "previous_period"),
            graph,
            tabs,
        }
    }

    /// The `filters` parameter, as the Stats API reads it.
    pub fn filters_param(&self) -> Option<String> {
        if self.filters.is_empty() {
            return None;
        }
        Some(
            self.filters
                .iter()
                .map(Condition::text)
                .collect::<Vec<_>>()
                .join(";"),
        )
    }

    /// The Stats API parameters of this view of `domain`.
    pub fn api_params(&self, domain: &str) -> Params {
        let mut p = Params::new();
        p.insert("site_id".into(), domain.to_string());
        p.insert("period".into(), self.period.clone());
        if let Some(d) = &self.date {
            p.insert("date".into(), d.clone());
        }
        if let Some(f) = self.filters_param() {
            p.insert("filters".into(), f);
        }
        p
    }

    pub fn tab(&self, panel: &str) -> Option<&str> {
        self.tabs
            .iter()
            .find(|(k, _)| k == panel)
            .map(|(_, v)| v.as_str())
    }

    /// The query string of this view (without `?`), in a fixed order.
    pub fn query(&self) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        s.append_pair("period", &self.period);
        if let Some(d) = &self.date {
            s.append_pair("date", d);
        }
        if let Some(f) = self.filters_param() {
            s.append_pair("filters", &f);
        }
        if self.compare {
            s.append_pair("compare", "previous_period");
        }
        if self.graph != "visitors" {
            s.append_pair("graph", &self.graph);
        }
        for (k, v) in &self.tabs {
            s.append_pair(k, v);
        }
        s.finish()
    }

    /// This view with `property==value` added, replacing any condition on
    /// the same property.
    pub fn with_filter(&self, property: &str, value: &str) -> ViewState {
        let mut v = self.clone();
        v.filters.retain(|c| c.property != property);
        v.filters.push(Condition {
            property: property.to_string(),
            op: "==",
            value: value.to_string(),
        });
        v
    }

    /// The chip of each filter; `link` makes the link to a view.
    pub fn chips(&self, link: impl Fn(&ViewState) -> String) -> Vec<Chip> {
        self.filters
            .iter()
            .enumerate()
            .map(|(i, c)| Chip {
                label: c.label(),
                remove_href: link(&self.without_filter(i)),
            })
            .collect()
    }

    pub fn without_filter(&self, index: usize) -> ViewState {
        let mut v = self.clone();
        if index < v.filters.len() {
            v.filters.remove(index);
        }
        v
    }

    pub fn with_period(&self, period: &str, date: Option<String>) -> ViewState {
        ViewState {
            period: period.to_string(),
            date,
            ..self.clone()
        }
    }

    pub fn with_compare(&self, on: bool) -> ViewState {
        ViewState {
            compare: on,
            ..self.clone()
        }
    }

    pub fn with_graph(&self, metric: &str) -> ViewState {
        ViewState {
            graph: metric.to_string(),
            ..self.clone()
        }
    }

    pub fn with_tab(&self, panel: &str, tab: &str) -> ViewState {
        let mut v = self.clone();
        v.tabs.retain(|(k, _)| k != panel);
        v.tabs.push((panel.to_string(), tab.to_string()));
        v.tabs
            .sort_by_key(|(k, _)| TAB_KEYS.iter().position(|t| t == k));
        v
    }

    /// This view filtered to `property == value`, or `None` when the
    /// `filters` syntax cannot say it: `;` and `|` separate conditions and
    /// alternatives, and there is no escaping them.
    pub fn filter_link(&self, property: &str, value: &str) -> Option<ViewState> {
        (!value.contains([';', '|'])).then(|| self.with_filter(property, value))
    }

    /// The value of an `==` filter on `property` with a single value.
    pub fn is_filtered(&self, property: &str) -> Option<&str> {
        self.filters
            .iter()
            .find(|c| c.property == property && c.op == "==" && !c.value.contains('|'))
            .map(|c| c.value.as_str())
    }
}

/// 950, 1.2k, 12k, 3.4M.
pub fn count(n: i64) -> String {
    let a = n.unsigned_abs() as f64;
    let sign = if n < 0 { "-" } else { "" };
    let short = |v: f64, unit: &str| {
        if v < 10.0 {
            let s = format!("{:.1}", (v * 10.0).floor() / 10.0);
            format!("{sign}{}{unit}", s.trim_end_matches(".0"))
        } else {
            format!("{sign}{}{unit}", v.floor() as i64)
        }
    };
    if a < 1000.0 {
        n.to_string()
    } else if a < 1e6 {
        short(a / 1e3, "k")
    } else if a < 1e9 {
        short(a / 1e6, "M")
    } else {
        short(a / 1e9, "B")
    }
}

/// 45s, 3m 20s, 1h 5m.
pub fn duration(secs: i64) -> String {
    let s = secs.max(0);
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m {}s", s / 60, s % 60)
    } else {
        format!("{}h {}m", s / 3600, (s % 3600) / 60)
    }
}

/// What the dashboard shows for a value the API answers null: a rate of a
/// period or bucket without visits.
pub const NO_VALUE: &str = "–";

/// A metric's value from an API answer as the dashboard shows it, a dash
/// for null.
pub fn metric_value(name: &str, value: &serde_json::Value) -> String {
    match value.as_f64() {
        Some(v) => metric(name, v),
        None => NO_VALUE.to_string(),
    }
}

/// A metric's value as the dashboard shows it.
pub fn metric(name: &str, value: f64) -> String {
    match name {
        "bounce_rate" => format!("{}%", value.round() as i64),
        "visit_duration" => duration(value.round() as i64),
        "views_per_visit" => format!("{value:.2}"),
        _ => count(value.round() as i64),
    }
}

/// A round step for four gridlines that reach at least `max`: the smallest
/// 1, 2, 2.5, 3, 4, 5, 6 or 8 × 10^k at least `max / 4`, and at least 1 for
/// metrics that are whole numbers.
pub fn nice_step(max: f64, whole: bool) -> f64 {
    let raw = max / 4.0;
    let floor = if whole { 1.0 } else { 0.01 };
    if raw <= floor {
        return floor;
    }
    let mut scale = 10f64.powf(raw.log10().floor());
    loop {
        for m in [1.0, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0] {
            let step = m * scale;
            if step >= raw && (!whole || step.fract() == 0.0) {
                return step;
            }
        }
        scale *= 10.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn state_round_trips_through_its_url() {
        let v = ViewState::from_query(&q(&[
            ("period", "7d"),
            ("filters", "visit:source==Google;event:page==/a;b"),
            ("compare", "previous_period"),
            ("pages", "entry"),
            ("graph", "nonsense"),
        ]));
        assert_eq!(
            v.filters.len(),
            2,
            "a condition without operator is dropped"
        );
        assert_eq!(v.graph, "visitors");
        let back = ViewState::from_query(
            &form_urlencoded::parse(v.query().as_bytes())
                .into_owned()
                .collect(),
        );
        assert_eq!(back, v);
        let f = v.with_filter("visit:source", "Bing & <b>");
        assert_eq!(f.filters.len(), 2);
        assert_eq!(f.filters[1].value, "Bing & <b>");
        assert!(f.query().contains("Bing+%26+%3Cb%3E"));
        assert_eq!(f.without_filter(0).filters.len(), 1);
        assert_eq!(
            v.with_tab("sources", "utm_medium").query(),
            v.with_tab("sources", "utm_medium")
                .with_tab("sources", "utm_medium")
                .query()
        );
        assert_eq!(f.filters[0].label(), "Page is /a");
        assert!(v.filter_link("visit:source", "a|b").is_none());
        assert!(v.filter_link("event:page", "/x;y").is_none());
    }

    #[test]
    fn numbers_read_like_plausible() {
        assert_eq!(count(950), "950");
        assert_eq!(count(1_250), "1.2k");
        assert_eq!(count(12_900), "12k");
        assert_eq!(count(3_400_000), "3.4M");
        assert_eq!(count(2_000), "2k");
        assert_eq!(duration(200), "3m 20s");
        assert_eq!(duration(42), "42s");
        assert_eq!(duration(3_900), "1h 5m");
        assert_eq!(metric("bounce_rate", 41.6), "42%");
        assert_eq!(metric("views_per_visit", 2.0), "2.00");
        assert_eq!(metric_value("bounce_rate", &serde_json::json!(41.6)), "42%");
        assert_eq!(metric_value("bounce_rate", &serde_json::Value::Null), "–");
        assert_eq!(nice_step(0.0, true), 1.0);
        assert_eq!(nice_step(7.0, true), 2.0);
        assert_eq!(nice_step(214.0, true), 60.0);
        assert_eq!(nice_step(9.0, true), 3.0);
        assert_eq!(nice_step(1.99, false), 0.5);
        assert_eq!(nice_step(2_300.0, true), 600.0);
    }
}
