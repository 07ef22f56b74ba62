//! What a report asks and what it gets back, whichever read model answers:
//! time ranges, filters, breakdown dimensions, visit attributes, totals and
//! breakdown rows. The query layer builds these from a request; the read
//! models (rollups, recent traffic, raw tables) answer in them.

use std::collections::HashMap;

use crate::store::{VisitDims, VisitRecord};

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
    /// Pageviews by path.
    Page,
    /// Custom events by name.
    EventName,
    /// Events (pageviews and custom) by the value of one custom property.
    Prop(String),
    /// Visits by one of their attributes.
    Visit(VisitColumn),
}

/// A visit attribute: what a breakdown can group visits by, and a filter
/// can look at. Its name is the `visit:` property of the Stats API and the
/// column of the `visits` table, so SQL names a column only through
/// [`VisitColumn::name`], never from a request.
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
    /// Every attribute, in the order of their rollup dimension codes and of
    /// recent traffic's attribute sets: entry and exit page first.
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

    /// The attribute's name: its `visits` column and `visit:` property.
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

    /// The attribute of that name, if there is one.
    pub fn from_name(name: &str) -> Option<VisitColumn> {
        VisitColumn::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Its position in [`VisitColumn::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Its value in a visit.
    pub fn of(self, v: &VisitRecord) -> Option<&str> {
        let d: &VisitDims = &v.dims;
        let value = match self {
            VisitColumn::EntryPage => &v.entry_page,
            VisitColumn::ExitPage => &v.exit_page,
            VisitColumn::Source => &d.source,
            VisitColumn::Referrer => &d.referrer,
            VisitColumn::UtmMedium => &d.utm_medium,
            VisitColumn::UtmSource => &d.utm_source,
            VisitColumn::UtmCampaign => &d.utm_campaign,
            VisitColumn::UtmTerm => &d.utm_term,
            VisitColumn::UtmContent => &d.utm_content,
            VisitColumn::Device => &d.device,
            VisitColumn::Browser => &d.browser,
            VisitColumn::BrowserVersion => &d.browser_version,
            VisitColumn::Os => &d.os,
            VisitColumn::OsVersion => &d.os_version,
            VisitColumn::Country => &d.country,
            VisitColumn::Region => &d.region,
            VisitColumn::City => &d.city,
        };
        value.as_deref()
    }
}

/// One value of a breakdown. For a page or an event name, `visits` counts
/// the visits whose first view of that page (first event of that name) falls
/// in the range: unlike distinct visits, these add up across days.
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

impl BreakdownRow {
    /// Adds `other`'s numbers (of the same value, another part of a range).
    pub fn add(&mut self, other: &BreakdownRow) {
        self.visitors += other.visitors;
        self.visits += other.visits;
        self.pageviews += other.pageviews;
        self.events += other.events;
        self.bounces += other.bounces;
        self.visit_duration_sum += other.visit_duration_sum;
    }
}

/// Breakdown rows of another part of a report's range, by value, that a
/// read model adds to its own rows of the same values before it ranks
/// them. Their visitors are net of those both parts count.
#[derive(Debug, Default)]
pub struct RowsToAdd {
    missing: Option<BreakdownRow>,
    by_value: HashMap<String, BreakdownRow>,
}

impl RowsToAdd {
    /// Adds `row` to those of its value.
    pub fn add(&mut self, row: &BreakdownRow) {
        let mine = match &row.value {
            None => self.missing.get_or_insert_with(BreakdownRow::default),
            Some(v) => self.by_value.entry(v.clone()).or_default(),
        };
        mine.add(row);
        mine.value.clone_from(&row.value);
    }

    /// The row of `value`, if any.
    pub fn get(&self, value: Option<&str>) -> Option<&BreakdownRow> {
        match value {
            None => self.missing.as_ref(),
            Some(v) => self.by_value.get(v),
        }
    }

    /// Every row, in no order.
    pub fn rows(&self) -> impl Iterator<Item = &BreakdownRow> {
        self.missing.iter().chain(self.by_value.values())
    }

    pub fn is_empty(&self) -> bool {
        self.missing.is_none() && self.by_value.is_empty()
    }
}

/// The visitors of the leading values of a breakdown that shows `need`
/// rows, without counting every value's: `bounds` are exact upper bounds on
/// each value's visitors (its visits, pageviews or events), in descending
/// order, and `count(ranks)` counts the visitors of the values at those
/// ranks. Counting starts a little past `need` and widens until no value
/// left can overtake the last one shown. Returns the visitors of the
/// leading ranks, as many as were counted (none when `need` is 0). Every
/// read model ranks this way.
pub fn count_leading<E>(
    bounds: &[i64],
    need: usize,
    mut count: impl FnMut(std::ops::Range<usize>) -> Result<Vec<i64>, E>,
) -> Result<Vec<i64>, E> {
    let mut visitors: Vec<i64> = Vec::new();
    if need == 0 {
        // No row shown (limit 0): nothing to count, rather than everything.
        return Ok(visitors);
    }
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

/// Events that are not user actions: they never count as events or visitors,
/// in any read model.
pub const NOT_AN_ACTION: &str = "engagement";

/// What a filter looks at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FilterField {
    /// The event's page path; values may use `*` wildcards.
    Page,
    EventName,
    /// A custom property of the event.
    Prop(String),
    /// One of the visit's attributes.
    Visit(VisitColumn),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilterOp {
    /// Equal to one of the values (`*` in a page value is a wildcard).
    Is,
    IsNot,
    /// Contains one of the values.
    Contains,
}

/// One condition; `values` are alternatives (`a|b`). A `None` value matches
/// a missing attribute (Plausible's "Direct / None").
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Filter {
    pub field: FilterField,
    pub op: FilterOp,
    pub values: Vec<Option<String>>,
}

impl Filter {
    /// Whether it looks at an event (its page, name or a property) rather
    /// than at the event's visit.
    pub fn on_event(&self) -> bool {
        !matches!(self.field, FilterField::Visit(_))
    }
}

/// Whether any of `filters` looks at events: then a visit counts only if it
/// has a matching event, which every read model looks for up to a day past
/// a range's end.
pub fn has_event_filters(filters: &[Filter]) -> bool {
    filters.iter().any(Filter::on_event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_leading_counts_nothing_when_no_row_is_shown() {
        let bounds: Vec<i64> = (1..=100).rev().collect();
        let mut counted = 0;
        let got = count_leading(&bounds, 0, |ranks| {
            counted += ranks.len();
            Ok::<_, ()>(ranks.map(|r| bounds[r]).collect())
        });
        assert_eq!((got, counted), (Ok(vec![]), 0));
        // Rows shown: counting stops once nothing left can overtake them.
        let mut counted = 0;
        let got = count_leading(&bounds, 2, |ranks| {
            counted += ranks.len();
            Ok::<_, ()>(ranks.map(|r| bounds[r]).collect())
        });
        assert_eq!(&got.unwrap()[..2], &[100, 99]);
        assert!(counted < 10, "{counted}");
    }
}
