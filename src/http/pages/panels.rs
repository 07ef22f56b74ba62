//! The dashboard's panels: which tabs each has and which Stats API
//! property each tab breaks down.

use super::view::ViewState;

/// Rows per panel, as Plausible shows.
pub const PANEL_ROWS: i64 = 9;

/// A tab of a panel: its key in the URL, its name, the property it breaks
/// down, and the column heading.
pub struct Tab {
    pub key: &'static str,
    pub label: &'static str,
    pub property: &'static str,
}

pub struct PanelDef {
    pub key: &'static str,
    pub title: &'static str,
    pub tabs: &'static [Tab],
}

const fn tab(key: &'static str, label: &'static str, property: &'static str) -> Tab {
    Tab {
        key,
        label,
        property,
    }
}

pub const PANELS: &[PanelDef] = &[
    PanelDef {
        key: "sources",
        title: "Top sources",
        tabs: &[
            tab("sources", "Sources", "visit:source"),
            tab("referrers", "Referrers", "visit:referrer"),
            tab("utm_medium", "Medium", "visit:utm_medium"),
            tab("utm_source", "UTM source", "visit:utm_source"),
            tab("utm_campaign", "Campaign", "visit:utm_campaign"),
        ],
    },
    PanelDef {
        key: "pages",
        title: "Top pages",
        tabs: &[
            tab("pages", "Top pages", "event:page"),
            tab("entry", "Entry pages", "visit:entry_page"),
            tab("exit", "Exit pages", "visit:exit_page"),
        ],
    },
    PanelDef {
        key: "locations",
        title: "Locations",
        tabs: &[
            tab("countries", "Countries", "visit:country"),
            tab("regions", "Regions", "visit:region"),
            tab("cities", "Cities", "visit:city"),
        ],
    },
    PanelDef {
        key: "devices",
        title: "Devices",
        tabs: &[
            tab("browsers", "Browsers", "visit:browser"),
            tab("os", "Operating systems", "visit:os"),
            tab("devices", "Devices", "visit:device"),
        ],
    },
    PanelDef {
        key: "goals",
        title: "Goals and events",
        tabs: &[
            tab("goals", "Goals", "event:goal"),
            tab("events", "Custom events", "event:name"),
        ],
    },
];

/// With a browser or OS filtered to one value, its tab lists versions.
pub fn drill_down(property: &'static str, state: &ViewState) -> (&'static str, Option<String>) {
    match property {
        "visit:browser" => match state.is_filtered("visit:browser") {
            Some(b) => ("visit:browser_version", Some(format!("{b} versions"))),
            None => (property, None),
        },
        "visit:os" => match state.is_filtered("visit:os") {
            Some(o) => ("visit:os_version", Some(format!("{o} versions"))),
            None => (property, None),
        },
        _ => (property, None),
    }
}

/// The value a breakdown row of `property` is about, as shown.
pub fn row_label(row: &serde_json::Value, property: &str) -> String {
    match &row[result_key(property).as_str()] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The key a breakdown's rows carry their value under.
fn result_key(property: &str) -> String {
    match property {
        "event:page" => "page".into(),
        "event:name" => "name".into(),
        "event:goal" => "goal".into(),
        p => p
            .strip_prefix("visit:")
            .or_else(|| p.strip_prefix("event:props:"))
            .unwrap_or(p)
            .to_string(),
    }
}

/// Tabs of the goals panel named `prop:KEY` break its events down by the
/// custom property KEY; they are offered while one event or goal is chosen.
pub const PROP_TAB: &str = "prop:";

/// A tab as the URL chose it.
pub struct Chosen {
    pub key: String,
    pub label: String,
    pub panel_title: &'static str,
    pub property: String,
    /// The column heading, when the property's own name would not do.
    pub heading: Option<String>,
}

/// The tab `key` of any panel, with drill-downs applied for view `v`.
pub fn resolve(key: &str, v: &ViewState) -> Option<Chosen> {
    if let Some(prop) = key.strip_prefix(PROP_TAB).filter(|p| !p.is_empty()) {
        return Some(Chosen {
            key: key.to_string(),
            label: prop.to_string(),
            panel_title: "Goals and events",
            property: format!("event:props:{prop}"),
            heading: None,
        });
    }
    let (panel, tab) = PANELS
        .iter()
        .find_map(|p| p.tabs.iter().find(|t| t.key == key).map(|t| (p, t)))?;
    let (property, heading) = drill_down(tab.property, v);
    Some(Chosen {
        key: tab.key.to_string(),
        label: tab.label.to_string(),
        panel_title: panel.title,
        property: property.to_string(),
        heading,
    })
}

/// Whether `v` narrows to one custom event or goal, whose properties the
/// goals panel can then break down.
pub fn offers_props(v: &ViewState) -> bool {
    v.is_filtered("event:name").is_some() || v.is_filtered("event:goal").is_some()
}
