//! Recent traffic as the side after the column store's seam
//! ([`HeldSite`]): the part after it and the visits that crossed it, read
//! from memory by the rules the raw tables' side follows
//! ([`crate::report::sqlite::seam::crossing`]). Visitors and visits are
//! this site's dense numbers, compared only with each other.

use std::collections::HashMap;

use super::breakdown;
use super::event_log::Columns;
use super::ids::{IdMap, IdSet};
use super::scan::{self, Scan};
use super::table::{SiteTraffic, Visit, prop_key, prop_value};
use crate::report::model::has_event_filters;
use crate::report::model::{BreakdownRow, Dimension, Filter, TimeRange, Totals, VisitColumn};
use crate::report::sqlite::seam::{
    AddedVisit, AfterSeam, Crossing, KeyVisitors, ValueVisitor, ValuedEvent,
};
use crate::store::StoreError;

/// One site's recent traffic, which holds every event from `since`.
pub(super) struct HeldSite<'a> {
    pub(super) site: &'a SiteTraffic,
    pub(super) since: i64,
}

impl HeldSite<'_> {
    /// Whether the event at `i` is of a visit started from `from` to `to`.
    fn started(&self, c: &Columns, i: usize, from: i64, to: i64) -> bool {
        let started = i64::from(c.started[i]);
        from <= started && started < to
    }

    fn text(&self, id: u32) -> Option<String> {
        self.site.dict.get(id).map(str::to_string)
    }

    /// The value of `dimension` (an event dimension) of the event at `i`,
    /// or `None` when the event has none (a page of a custom event, a
    /// property it lacks).
    fn value(&self, c: &Columns, i: usize, dimension: &Dimension, key: Option<u32>) -> Option<u32> {
        let e = c.get(i);
        match dimension {
            Dimension::Page => e.pageview.then_some(e.path),
            Dimension::EventName => (!e.pageview).then_some(e.name),
            Dimension::Prop(_) => key.and_then(|k| prop_value(self.site, e.props, k)),
            Dimension::Visit(_) => None,
        }
    }

    /// The visits (by index) started from `from` to the seam with a
    /// matching event in each window `(start, end, has)`, passing the
    /// visit filters.
    fn visits_with(
        &self,
        q: &Scan<'_>,
        (from, seam): (i64, i64),
        windows: &[(i64, i64, bool)],
    ) -> Vec<u32> {
        let mut found: Option<IdSet<u32>> = None;
        let mut without: IdSet<u32> = IdSet::default();
        for &(start, end, has) in windows {
            let mut met = IdSet::default();
            q.each_event(TimeRange { start, end }, |c, i| {
                if self.started(c, i, from, seam) {
                    met.insert(c.visit[i]);
                }
            });
            if has {
                found = Some(match found {
                    Some(f) => f.intersection(&met).copied().collect(),
                    None => met,
                });
            } else {
                without.extend(met);
            }
        }
        let mut visits: Vec<u32> = found
            .unwrap_or_default()
            .into_iter()
            .filter(|v| !without.contains(v))
            .collect();
        visits.sort_unstable();
        visits
    }
}

impl AfterSeam for HeldSite<'_> {
    fn holds(&self, start: i64) -> bool {
        start >= self.since
    }

    fn totals(&self, range: TimeRange, filters: &[Filter]) -> Result<Totals, StoreError> {
        Ok(scan::totals(self.site, range, filters))
    }

    fn rows(
        &self,
        range: TimeRange,
        dimension: &Dimension,
        filters: &[Filter],
        limit: i64,
    ) -> Result<Vec<BreakdownRow>, StoreError> {
        Ok(breakdown::breakdown(
            self.site, range, dimension, filters, limit, 0,
        ))
    }

    fn key_counts(
        &self,
        range: TimeRange,
        filters: &[Filter],
        limit: i64,
    ) -> Result<KeyVisitors, StoreError> {
        let q = Scan::new(self.site, filters);
        let mut keys: IdMap<u32, IdSet<u32>> = IdMap::default();
        q.each_event(range, |c, i| {
            let props = c.props[i];
            if props != 0 {
                for (k, _) in self.site.props[props as usize - 1].iter() {
                    keys.entry(*k).or_default().insert(c.visitor[i]);
                }
            }
        });
        let mut counted: KeyVisitors = keys
            .into_iter()
            .filter_map(|(k, v)| Some((self.text(k)?, v.len() as i64)))
            .collect();
        counted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        counted.truncate(limit.max(0) as usize);
        Ok(counted)
    }

    fn reach(&self, range: TimeRange, seam: i64) -> Result<Option<i64>, StoreError> {
        let mut earliest: Option<i64> = None;
        self.site.events.for_each(
            seam,
            range.end + 86_400,
            |_| true,
            |c, i| {
                let started = i64::from(c.started[i]);
                if started < seam && earliest.is_none_or(|e| started < e) {
                    earliest = Some(started);
                }
            },
        );
        Ok(earliest)
    }

    fn visitors_on_both_sides(&self, c: &Crossing, filters: &[Filter]) -> Result<i64, StoreError> {
        let q = Scan::new(self.site, filters);
        let mut ids: IdSet<u32> = IdSet::default();
        q.each_event(c.after(), |cols, i| {
            if self.started(cols, i, c.earliest, c.seam) {
                ids.insert(cols.visitor[i]);
            }
        });
        if ids.is_empty() {
            return Ok(0);
        }
        let mut both: IdSet<u32> = IdSet::default();
        let before = c.before();
        q.each_event(before, |cols, i| {
            if ids.contains(&cols.visitor[i]) {
                both.insert(cols.visitor[i]);
            }
        });
        Ok(both.len() as i64)
    }

    fn visits_matched_after(
        &self,
        c: &Crossing,
        filters: &[Filter],
    ) -> Result<(i64, i64, i64), StoreError> {
        if !has_event_filters(filters) {
            return Ok((0, 0, 0));
        }
        let q = Scan::new(self.site, filters);
        let mut t = (0, 0, 0);
        for v in self.visits_with(&q, (c.visits_from(), c.seam), &c.matched_only_after()) {
            let v = &self.site.visits[v as usize];
            t.0 += 1;
            t.1 += i64::from(v.bounce);
            t.2 += v.duration();
        }
        Ok(t)
    }

    fn valued_events(
        &self,
        c: &Crossing,
        dimension: &Dimension,
        filters: &[Filter],
    ) -> Result<(Vec<ValuedEvent>, Vec<ValuedEvent>), StoreError> {
        let q = Scan::new(self.site, filters);
        let key = match dimension {
            Dimension::Prop(k) => prop_key(&self.site.dict, k),
            _ => None,
        };
        // Values as dictionary ids first: one string per value, not per
        // event; each (value, visitor, visit) once, as a long visit has
        // many events of one value.
        let mut after: IdSet<(u32, u32, u32)> = IdSet::default();
        q.each_event(c.after(), |cols, i| {
            if self.started(cols, i, c.earliest, c.seam)
                && let Some(value) = self.value(cols, i, dimension, key)
            {
                after.insert((value, cols.visitor[i], cols.visit[i]));
            }
        });
        if after.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let ids: IdSet<u32> = after.iter().map(|e| e.1).collect();
        let mut before: IdSet<(u32, u32, u32)> = IdSet::default();
        let range = c.before();
        q.each_event(range, |cols, i| {
            if ids.contains(&cols.visitor[i])
                && let Some(value) = self.value(cols, i, dimension, key)
            {
                before.insert((value, cols.visitor[i], cols.visit[i]));
            }
        });
        let mut texts: HashMap<u32, Option<String>> = HashMap::new();
        let mut valued = |events: IdSet<(u32, u32, u32)>| -> Vec<ValuedEvent> {
            events
                .into_iter()
                .map(|(value, visitor, visit)| {
                    let text = texts.entry(value).or_insert_with(|| self.text(value));
                    (text.clone(), i64::from(visitor), Some(i64::from(visit)))
                })
                .collect()
        };
        let after = valued(after);
        Ok((after, valued(before)))
    }

    fn visits_matched_after_by(
        &self,
        c: &Crossing,
        column: VisitColumn,
        filters: &[Filter],
    ) -> Result<(Vec<AddedVisit>, Vec<ValueVisitor>), StoreError> {
        if !has_event_filters(filters) {
            return Ok((Vec::new(), Vec::new()));
        }
        let q = Scan::new(self.site, filters);
        let value = |v: &Visit| self.text(self.site.column(v, column.index()));
        let added: Vec<AddedVisit> = self
            .visits_with(&q, (c.visits_from(), c.seam), &c.matched_only_after())
            .into_iter()
            .map(|n| {
                let v = &self.site.visits[n as usize];
                AddedVisit {
                    row: BreakdownRow {
                        value: value(v),
                        visitors: 0,
                        visits: 1,
                        pageviews: i64::from(v.pageviews),
                        events: i64::from(v.events),
                        bounces: i64::from(v.bounce),
                        visit_duration_sum: v.duration(),
                    },
                    visitor_id: i64::from(v.visitor),
                }
            })
            .collect();
        if added.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let ids: IdSet<u32> = added.iter().map(|v| v.visitor_id as u32).collect();
        let from = c.same_ids_from();
        let counted = self
            .visits_with(&q, (from, c.seam), &[(from, c.seam, true)])
            .into_iter()
            .map(|n| &self.site.visits[n as usize])
            .filter(|v| ids.contains(&v.visitor))
            .map(|v| (value(v), i64::from(v.visitor)))
            .collect();
        Ok((added, counted))
    }

    fn key_visitors(
        &self,
        c: &Crossing,
        filters: &[Filter],
    ) -> Result<(KeyVisitors, KeyVisitors), StoreError> {
        let q = Scan::new(self.site, filters);
        let pairs = |range: TimeRange, keep: &dyn Fn(&Columns, usize) -> bool| {
            let mut pairs: IdSet<(u32, u32)> = IdSet::default();
            q.each_event(range, |cols, i| {
                let props = cols.props[i];
                if props != 0 && keep(cols, i) {
                    for (k, _) in self.site.props[props as usize - 1].iter() {
                        pairs.insert((*k, cols.visitor[i]));
                    }
                }
            });
            pairs
        };
        let after = pairs(c.after(), &|cols, i| {
            self.started(cols, i, c.earliest, c.seam)
        });
        if after.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let ids: IdSet<u32> = after.iter().map(|p| p.1).collect();
        let range = c.before();
        let before = pairs(range, &|cols, i| ids.contains(&cols.visitor[i]));
        let texts = |pairs: IdSet<(u32, u32)>| -> KeyVisitors {
            pairs
                .into_iter()
                .filter_map(|(k, v)| Some((self.text(k)?, i64::from(v))))
                .collect()
        };
        Ok((texts(after), texts(before)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::{FilterField, FilterOp};
    use crate::report::sqlite::seam::crossing::RawTables;
    use crate::report::sqlite::seam::tests::{SEAM, store_with};
    use crate::report::sqlite::seam::{Joined, join_prop_keys, join_totals, rows_to_add};

    const D: i64 = 86_400;

    fn filter(field: FilterField, op: FilterOp, value: &str) -> Filter {
        Filter {
            field,
            op,
            values: vec![Some(value.to_string())],
        }
    }

    /// Rows by value, to compare two `RowsToAdd`.
    fn sorted(rows: Joined<crate::report::model::RowsToAdd>) -> Option<Vec<BreakdownRow>> {
        rows.answer().map(|r| {
            let mut rows: Vec<BreakdownRow> = r.rows().cloned().collect();
            rows.sort_by(|a, b| a.value.cmp(&b.value));
            rows
        })
    }

    /// Every join at the seam reads the same from recent traffic as from
    /// the raw tables, on visits that cross it (one from days before the
    /// window too, which memory declines when the range reaches its day).
    #[test]
    fn joins_read_from_memory_agree_with_the_raw_tables() {
        let (p, s) = ("pageview", "Signup");
        // A key with `\` is no event's anywhere (the JSON path cannot name it).
        let (pro, free) = (
            Some(r#"{"plan":"pro","a\\b":"1"}"#),
            Some(r#"{"plan":"free","x":"1"}"#),
        );
        let (_dir, store, site) = store_with(
            &[
                (1, 10, SEAM - 600, SEAM + 600, Some("Google")),
                (2, 20, SEAM + 100, SEAM + 100, Some("Google")),
                (3, 30, SEAM - 3600, SEAM - 3600, None),
                (4, 10, SEAM - 7200, SEAM - 7200, Some("Bing")),
                (5, 50, SEAM - 36 * 3600, SEAM + 300, Some("Long")),
                (6, 60, SEAM - 600, SEAM + 1000, Some("Google")),
                (7, 70, SEAM - 4 * D, SEAM + 200, Some("Ancient")),
            ],
            &[
                (1, 10, SEAM - 600, "/a", pro, p),
                (1, 10, SEAM + 600, "/b", pro, p),
                (2, 20, SEAM + 100, "/a", free, p),
                (3, 30, SEAM - 3600, "/x", free, p),
                (4, 10, SEAM - 7200, "/b", None, p),
                (5, 50, SEAM - 36 * 3600, "/a", None, p),
                (5, 50, SEAM - 12 * 3600, "/c", free, p),
                (5, 50, SEAM + 300, "/b", free, p),
                (6, 60, SEAM - 600, "/c", None, p),
                (6, 60, SEAM + 900, "/d", None, p),
                (6, 60, SEAM + 1000, "/d", pro, s),
                (7, 70, SEAM - 4 * D, "/a", None, p),
                (7, 70, SEAM + 200, "/a", pro, p),
            ],
        );
        let conn = store.reader().unwrap();
        let since = SEAM - 2 * D;
        let (held, _) = super::super::load_site(&conn, site, since, SEAM + D).unwrap();
        let memory = HeldSite { site: &held, since };
        let raw = RawTables {
            conn: &conn,
            site_id: site,
        };
        let page = |op, v| filter(FilterField::Page, op, v);
        let source = |v| filter(FilterField::Visit(VisitColumn::Source), FilterOp::Is, v);
        let filters: Vec<Vec<Filter>> = vec![
            vec![],
            vec![page(FilterOp::Is, "/b")],
            vec![page(FilterOp::Is, "/a")],
            vec![page(FilterOp::IsNot, "/c")],
            vec![source("Google")],
            vec![source("Google"), page(FilterOp::Is, "/d")],
            vec![filter(
                FilterField::Prop("plan".into()),
                FilterOp::Is,
                "pro",
            )],
            vec![filter(FilterField::EventName, FilterOp::Is, "Signup")],
            vec![filter(FilterField::Prop("a\\b".into()), FilterOp::Is, "1")],
        ];
        let dimensions = [
            Dimension::Page,
            Dimension::EventName,
            Dimension::Prop("plan".into()),
            Dimension::Prop("a\\b".into()),
            Dimension::Visit(VisitColumn::Source),
            Dimension::Visit(VisitColumn::EntryPage),
        ];
        let mut declined = 0;
        for start in [SEAM - D, SEAM - 2 * D, SEAM - 3600, SEAM - 5 * D] {
            for end in [SEAM + D, SEAM] {
                let range = TimeRange { start, end };
                for f in &filters {
                    let what = format!("{range:?} {f:?}");
                    let want = join_totals(&raw, range, SEAM, f, Totals::default(), true).unwrap();
                    let got =
                        join_totals(&memory, range, SEAM, f, Totals::default(), true).unwrap();
                    if got == Joined::NotHeld {
                        // Only when the corrections reach before the window.
                        assert!(start < since, "{what}");
                        declined += 1;
                        continue;
                    }
                    assert_eq!(got, want, "totals {what}");
                    for d in &dimensions {
                        let want = rows_to_add(&raw, range, SEAM, d, f, 100).unwrap();
                        let got = rows_to_add(&memory, range, SEAM, d, f, 100).unwrap();
                        assert_eq!(sorted(got), sorted(want), "{d:?} {what}");
                    }
                    let want = join_prop_keys(&raw, range, SEAM, f, Vec::new(), (10, 100));
                    let got = join_prop_keys(&memory, range, SEAM, f, Vec::new(), (10, 100));
                    assert_eq!(got.unwrap(), want.unwrap(), "keys {what}");
                }
            }
        }
        assert!(declined > 0);
        // A part after the seam with too many values is too many on either
        // side: the raw tables are not asked the same again.
        let range = TimeRange {
            start: SEAM - D,
            end: SEAM + D,
        };
        for side in [&memory as &dyn AfterSeam, &raw] {
            let joined = rows_to_add(side, range, SEAM, &Dimension::Page, &[], 2).unwrap();
            assert!(matches!(joined, Joined::TooMany));
            let keys = join_prop_keys(side, range, SEAM, &[], Vec::new(), (10, 1));
            assert_eq!(keys.unwrap(), Joined::TooMany);
        }
    }
}
