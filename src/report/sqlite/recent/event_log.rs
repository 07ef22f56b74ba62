//! A site's events, column by column and clustered on (attribute set, time):
//! the layout the filter scan reads.

/// One event as reports see it. Fields are 32-bit where they can be: a month
/// of a busy site is a million of these. Times are Unix seconds (u32 lasts
/// until 2106).
#[derive(Clone, Copy)]
pub(super) struct Event {
    pub(super) ts: u32,
    /// The visit's attribute set (fixed when a visit starts): visit filters
    /// are answered per set, without reading the visit.
    pub(super) attributes: u32,
    /// Index into the site's visits.
    pub(super) visit: u32,
    /// When the visit started (fixed, as its attribute set): the seam's
    /// joins ask it of every event after the seam, and a column of it
    /// streams where visits would be fetched one by one.
    pub(super) started: u32,
    /// The visit's visitor, as a dense per-site number (see
    /// `SiteTraffic::visitor_numbers`).
    pub(super) visitor: u32,
    pub(super) name: u32,
    pub(super) path: u32,
    /// 1 + index into the site's property lists, or 0 without properties.
    pub(super) props: u32,
    pub(super) pageview: bool,
    pub(super) first_view: bool,
}

/// Events column by column. A filtered report passes a share of the events
/// in its range (a quarter, say): gathering those from whole 36-byte
/// records would fetch most of the memory anyway, while the two or three
/// narrow columns a report reads stream through.
#[derive(Default)]
pub(super) struct Columns {
    pub(super) ts: Vec<u32>,
    pub(super) attributes: Vec<u32>,
    pub(super) visit: Vec<u32>,
    pub(super) started: Vec<u32>,
    pub(super) visitor: Vec<u32>,
    pub(super) name: Vec<u32>,
    pub(super) path: Vec<u32>,
    pub(super) props: Vec<u32>,
    /// `PAGEVIEW` and `FIRST_VIEW` bits.
    pub(super) flags: Vec<u8>,
}

pub(super) const PAGEVIEW: u8 = 1;
pub(super) const FIRST_VIEW: u8 = 2;

impl Columns {
    pub(super) fn len(&self) -> usize {
        self.ts.len()
    }

    #[inline(always)]
    pub(super) fn get(&self, i: usize) -> Event {
        let flags = self.flags[i];
        Event {
            ts: self.ts[i],
            attributes: self.attributes[i],
            visit: self.visit[i],
            started: self.started[i],
            visitor: self.visitor[i],
            name: self.name[i],
            path: self.path[i],
            props: self.props[i],
            pageview: flags & PAGEVIEW != 0,
            first_view: flags & FIRST_VIEW != 0,
        }
    }

    fn insert(&mut self, at: usize, e: Event) {
        self.ts.insert(at, e.ts);
        self.attributes.insert(at, e.attributes);
        self.visit.insert(at, e.visit);
        self.started.insert(at, e.started);
        self.visitor.insert(at, e.visitor);
        self.name.insert(at, e.name);
        self.path.insert(at, e.path);
        self.props.insert(at, e.props);
        let flags = (u8::from(e.pageview) * PAGEVIEW) | (u8::from(e.first_view) * FIRST_VIEW);
        self.flags.insert(at, flags);
    }

    /// Indexes of the events in `[start, end)` among `within`, whose times
    /// are in order.
    fn range(
        &self,
        within: std::ops::Range<usize>,
        start: i64,
        end: i64,
    ) -> std::ops::Range<usize> {
        let ts = &self.ts[within.clone()];
        let a = ts.partition_point(|&t| i64::from(t) < start);
        let b = ts.partition_point(|&t| i64::from(t) < end).max(a);
        within.start + a..within.start + b
    }
}

/// The events of one attribute set, `start..end` in [`EventLog::sorted`].
struct Run {
    set: u32,
    start: u32,
    end: u32,
}

/// A site's events, kept like a table clustered on (attribute set, time):
/// a filter on visit attributes is answered once per run of one set and
/// skips the runs it rejects whole, then reads the events it keeps in
/// order, time-bounded by a binary search per run. Events arriving since
/// the last compaction wait in a small time-ordered tail, read event by
/// event.
#[derive(Default)]
pub(super) struct EventLog {
    sorted: Columns,
    runs: Vec<Run>,
    tail: Columns,
}

impl EventLog {
    pub(super) fn len(&self) -> usize {
        self.sorted.len() + self.tail.len()
    }

    /// Adds an event to the tail, in time order.
    pub(super) fn insert(&mut self, e: Event) {
        let at = match self.tail.ts.last() {
            Some(&last) if last > e.ts => self.tail.ts.partition_point(|&t| t <= e.ts),
            _ => self.tail.len(),
        };
        self.tail.insert(at, e);
    }

    /// Calls `f` with the columns and index of every event in `[start, end)`
    /// whose attribute set `keep_set` accepts. `f` reads only the columns it
    /// needs.
    #[inline]
    pub(super) fn for_each(
        &self,
        start: i64,
        end: i64,
        mut keep_set: impl FnMut(u32) -> bool,
        mut f: impl FnMut(&Columns, usize),
    ) {
        for run in &self.runs {
            if keep_set(run.set) {
                let within = run.start as usize..run.end as usize;
                for i in self.sorted.range(within, start, end) {
                    f(&self.sorted, i);
                }
            }
        }
        for i in self.tail.range(0..self.tail.len(), start, end) {
            if keep_set(self.tail.attributes[i]) {
                f(&self.tail, i);
            }
        }
    }

    /// Every event, in no particular order.
    pub(super) fn all(&self) -> impl Iterator<Item = Event> + '_ {
        (0..self.sorted.len())
            .map(|i| self.sorted.get(i))
            .chain((0..self.tail.len()).map(|i| self.tail.get(i)))
    }

    /// Rebuilds the log from `events`, clustered on (attribute set, time).
    pub(super) fn from_events(mut events: Vec<Event>) -> EventLog {
        events.sort_unstable_by_key(|e| (e.attributes, e.ts, e.visit));
        let mut sorted = Columns::default();
        let mut runs: Vec<Run> = Vec::new();
        for e in events {
            let i = sorted.len() as u32;
            match runs.last_mut() {
                Some(run) if run.set == e.attributes => run.end = i + 1,
                _ => runs.push(Run {
                    set: e.attributes,
                    start: i,
                    end: i + 1,
                }),
            }
            sorted.insert(sorted.len(), e);
        }
        EventLog {
            sorted,
            runs,
            tail: Columns::default(),
        }
    }

    /// Folds the tail into the clustered part.
    pub(super) fn compact(&mut self) {
        if self.tail.len() > 0 {
            *self = EventLog::from_events(self.all().collect());
        }
    }

    /// Compacts once the tail is large enough to slow scans down: a few
    /// times a day for a busy site, and never costs more than the events
    /// added since the last time, in the long run.
    pub(super) fn compact_if_large(&mut self) {
        if self.tail.len() > (self.sorted.len() / 8).max(1 << 16) {
            self.compact();
        }
    }
}
