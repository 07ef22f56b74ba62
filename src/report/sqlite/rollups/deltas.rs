//! [`Deltas`]: changes to rollup rows, gathered in memory from events,
//! ended visits and imported days, then applied at once
//! (`super::apply`).
//!
//! One change lands in the same row of several grains (its day, week and
//! month, and its hour for totals), so changes are kept per group (site,
//! dimension and the buckets of every grain) and value, not per row: a
//! third of the lookups, and one visitor list for all the grains.

use chrono_tz::Tz;

use super::{DAY_AND_LONGER, Dim, Grain, prop_value};
use crate::report::calendar;
use crate::report::model::{NOT_AN_ACTION, VisitColumn};
use crate::store::{NewEvent, VisitRecord};

/// What one event contributes; borrowed from a `FedEvent` or a stored row.
pub(super) struct EventFacts<'a> {
    pub(super) site_id: i64,
    pub(super) ts: i64,
    pub(super) visitor_id: i64,
    pub(super) name: &'a str,
    pub(super) path: &'a str,
    pub(super) props: Option<&'a str>,
    pub(super) first_view: bool,
}

impl<'a> From<&'a NewEvent> for EventFacts<'a> {
    fn from(e: &'a NewEvent) -> Self {
        EventFacts {
            site_id: e.site_id,
            ts: e.ts,
            visitor_id: e.visitor_id,
            name: &e.name,
            path: &e.path,
            props: e.props.as_deref(),
            first_view: e.first_view,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub(super) struct Delta {
    pub(super) visits: i64,
    pub(super) pageviews: i64,
    pub(super) events: i64,
    pub(super) bounces: i64,
    pub(super) duration: i64,
    /// Visitor ids seen, duplicates included.
    pub(super) visitors: Vec<i64>,
}

/// Where one instant falls: its local hour, and its day, week and month.
#[derive(Clone, Copy)]
pub(super) struct Buckets {
    hour: i64,
    longer: [i64; 3],
}

impl Buckets {
    /// The day and longer grains.
    pub(super) fn longer(self) -> Span {
        Span {
            hour: None,
            longer: self.longer,
        }
    }

    /// Every grain.
    fn all(self) -> Span {
        Span {
            hour: Some(self.hour),
            longer: self.longer,
        }
    }
}

/// The buckets one change lands in: its day, week and month, and its hour
/// for the rows that have hours.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Span {
    hour: Option<i64>,
    longer: [i64; 3],
}

impl Span {
    /// (grain, bucket) of each.
    pub(super) fn grains(self) -> impl Iterator<Item = (Grain, i64)> {
        self.hour
            .map(|h| (Grain::Hour, h))
            .into_iter()
            .chain(DAY_AND_LONGER.into_iter().zip(self.longer))
    }
}

/// (site, dim, span): the rows of every grain that one change lands in,
/// without their value. Changes are gathered per group rather than per row,
/// since every grain of a group gets the same change: a third of the
/// lookups, and one visitor list for all the grains.
pub(super) type Group = (i64, Dim, Span);

/// Changes to rollup rows, gathered in memory and then applied at once.
#[derive(Default)]
pub struct Deltas {
    /// hashbrown's map: `entry_ref` finds a value by `&str` in one lookup and
    /// allocates its key only when new (std's map needs two lookups or an
    /// allocation per call), and its hasher is several times cheaper than
    /// std's SipHash; this runs for every event several times.
    rows: hashbrown::HashMap<Group, hashbrown::HashMap<String, Delta>>,
    /// (site, minute) → starts of its hour, day, week and month.
    buckets: hashbrown::HashMap<(i64, i64), Buckets>,
}

impl Deltas {
    /// Drops the changes of `site_id`, and the buckets it cached (its
    /// timezone changed).
    pub(super) fn forget_site(&mut self, site_id: i64) {
        self.rows.retain(|(site, _, _), _| *site != site_id);
        self.buckets.retain(|(site, _), _| *site != site_id);
    }

    pub(super) fn delta(&mut self, group: Group, value: &str) -> &mut Delta {
        self.rows
            .entry(group)
            .or_default()
            .entry_ref(value)
            .or_default()
    }

    pub(super) fn buckets_of(&mut self, tz: Tz, site_id: i64, ts: i64) -> Buckets {
        // DST changes fall on whole minutes, so a minute has one of each.
        *self
            .buckets
            .entry((site_id, ts.div_euclid(60)))
            .or_insert_with(|| Buckets {
                hour: calendar::hour_start(tz, ts),
                longer: [
                    calendar::day_start(tz, ts),
                    calendar::week_start(tz, ts),
                    calendar::month_start(tz, ts),
                ],
            })
    }

    pub(super) fn add_event(&mut self, tz: Tz, e: &EventFacts<'_>) {
        if e.name == NOT_AN_ACTION {
            return;
        }
        let b = self.buckets_of(tz, e.site_id, e.ts);
        let is_pageview = e.name == "pageview";
        let (pv, ev) = (i64::from(is_pageview), i64::from(!is_pageview));
        let count = |d: &mut Delta| {
            d.pageviews += pv;
            d.events += ev;
            d.visitors.push(e.visitor_id);
        };
        count(self.delta((e.site_id, Dim::Totals, b.all()), ""));
        let props: Vec<(String, String)> = e
            .props
            .and_then(|p| {
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(p).ok()
            })
            .map(|m| {
                m.into_iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| prop_value(&k, v)).map(|pv| (k, pv)))
                    .collect()
            })
            .unwrap_or_default();
        let (dim, value) = if is_pageview {
            (Dim::Page, e.path)
        } else {
            (Dim::EventName, e.name)
        };
        let d = self.delta((e.site_id, dim, b.longer()), value);
        count(d);
        d.visits += i64::from(e.first_view);
        for (_, value) in &props {
            count(self.delta((e.site_id, Dim::Prop, b.longer()), value));
        }
    }

    /// Adds an ended visit, by the hour, day and month it started in.
    pub(super) fn add_visit(&mut self, tz: Tz, v: &VisitRecord) {
        let b = self.buckets_of(tz, v.site_id, v.started_at);
        let (bounce, duration) = (i64::from(v.is_bounce), v.last_seen_at - v.started_at);
        let d = self.delta((v.site_id, Dim::Totals, b.all()), "");
        d.visits += 1;
        d.bounces += bounce;
        d.duration += duration;
        for column in VisitColumn::ALL {
            let value = column.of(v).unwrap_or("");
            let d = self.delta((v.site_id, Dim::Visit(column), b.longer()), value);
            d.visits += 1;
            d.pageviews += v.pageviews;
            d.events += v.events;
            d.bounces += bounce;
            d.duration += duration;
            d.visitors.push(v.visitor_id);
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The changes as a flat list, to apply in chunks.
    pub(super) fn into_rows(self) -> Vec<(Group, String, Delta)> {
        self.rows
            .into_iter()
            .flat_map(|(group, values)| values.into_iter().map(move |(v, d)| (group, v, d)))
            .collect()
    }
}
