use super::*;

/// Noon UTC of a fixed day, far from any real clock.
const D: i64 = 20_000;
const HOUR: i64 = 3600;

fn at(day: i64, hour: i64) -> i64 {
    day * DAY + hour * HOUR
}

#[test]
fn a_day_is_due_an_hour_after_it_ends() {
    assert!(!complete(D, at(D, 23)));
    assert!(!complete(D, at(D + 1, 1) - 1));
    assert!(complete(D, at(D + 1, 1)));
    // Nothing sealed: the complete days, oldest first; not today, nor
    // yesterday within the hour after midnight.
    let raw = [D - 3, D - 2, D - 1, D];
    let p = plan(&[], &raw, D - 10, None, at(D, 0) + 1800);
    assert_eq!(p.steps, vec![Step::Seal(D - 3), Step::Seal(D - 2)]);
    assert_eq!(p.pending, 2);
    assert!(!p.restart);
    let p = plan(&[], &raw, D - 10, None, at(D, 1));
    assert_eq!(p.steps.len(), 3);
    // Days before retention's cutoff are left alone.
    let p = plan(&[], &raw, D - 2, None, at(D, 1));
    assert_eq!(p.steps, vec![Step::Seal(D - 2), Step::Seal(D - 1)]);
    // Only the days after the newest sealed one.
    let p = plan(&[D - 3, D - 2], &raw, D - 10, None, at(D, 1));
    assert_eq!(p.steps, vec![Step::Seal(D - 1)]);
    assert_eq!(p.pending, 1);
    // Up to date.
    let p = plan(&[D - 3, D - 2, D - 1], &raw, D - 10, None, at(D, 12));
    assert_eq!(p, SitePlan::default());
}

#[test]
fn a_day_with_raw_events_before_the_newest_sealed_one_restarts_the_site() {
    // D - 2 has events now but was not sealed: events landed in the past.
    let raw = [D - 3, D - 2, D - 1];
    let p = plan(&[D - 3, D - 1], &raw, D - 10, None, at(D, 2));
    assert!(p.restart);
    assert_eq!(
        p.steps,
        vec![Step::Seal(D - 3), Step::Seal(D - 2), Step::Seal(D - 1)]
    );
    assert_eq!(p.pending, 3);
    // A day sealed without raw events left (retention) is no gap, nor is
    // a day before the cutoff.
    assert!(!plan(&[D - 3, D - 1], &[D - 1], D - 10, None, at(D, 2)).restart);
    assert!(!plan(&[D - 3, D - 1], &raw, D - 1, None, at(D, 2)).restart);
}

#[test]
fn a_provisional_day_is_sealed_again_when_its_visits_end_or_before_the_next() {
    let raw = [D - 1, D];
    // Open visits, no next day due: wait.
    let p = plan(&[D - 1], &raw, D - 10, Some((D - 1, false)), at(D, 5));
    assert!(p.steps.is_empty());
    // They ended: once more.
    let p = plan(&[D - 1], &raw, D - 10, Some((D - 1, true)), at(D, 5));
    assert_eq!(p.steps, vec![Step::Reseal(D - 1)]);
    assert_eq!(p.pending, 0);
    // Still open when the next day is due: sealed again first, as the
    // newest, then the next.
    let p = plan(&[D - 1], &raw, D - 10, Some((D - 1, false)), at(D + 1, 1));
    assert_eq!(p.steps, vec![Step::Reseal(D - 1), Step::Seal(D)]);
    // A day later even with no next day.
    let p = plan(
        &[D - 1],
        &[D - 1],
        D - 10,
        Some((D - 1, false)),
        at(D + 1, 1),
    );
    assert_eq!(p.steps, vec![Step::Reseal(D - 1)]);
    // Only the newest day can be provisional.
    let p = plan(&[D - 2, D - 1], &raw, D - 10, Some((D - 2, true)), at(D, 5));
    assert!(p.steps.is_empty());
}

#[test]
fn whether_a_seal_leaves_the_day_provisional() {
    assert!(stays_provisional(D, at(D + 1, 1), true, false));
    assert!(!stays_provisional(D, at(D + 1, 1), false, false));
    assert!(!stays_provisional(D, at(D + 1, 1), true, true));
    // A day later it is final whatever is open.
    assert!(!stays_provisional(D, at(D + 2, 1), true, false));
}

/// A site with traffic every day, one visit crossing each midnight and
/// ending at 02:00, looked at every ten minutes for four days: each day is
/// sealed once at 01:00 (provisional: its visit is open) and once more
/// when that visit has ended, never a third time, and never out of order.
#[test]
fn each_day_is_sealed_at_most_twice_in_increasing_order() {
    let mut sealed: Vec<i64> = Vec::new();
    let mut provisional: Option<i64> = None;
    let mut seals: HashMap<i64, usize> = HashMap::new();
    let mut now = at(D, 0);
    while now < at(D + 4, 0) {
        let raw: Vec<i64> = (D - 2..=now.div_euclid(DAY)).collect();
        // The visit that started on day p ends at 02:00 the day after.
        let ended = |p: i64| now >= at(p + 1, 2) + VISIT_SETTLED_AFTER;
        let p = plan(
            &sealed,
            &raw,
            D - 10,
            provisional.map(|p| (p, ended(p))),
            now,
        );
        assert!(!p.restart);
        for step in p.steps {
            let (day, last) = match step {
                Step::Reseal(d) => (d, true),
                Step::Seal(d) => (d, false),
            };
            match step {
                Step::Reseal(d) => assert_eq!(sealed.last(), Some(&d)),
                Step::Seal(d) => {
                    assert!(sealed.last().is_none_or(|n| *n < d));
                    sealed.push(d);
                }
            }
            *seals.entry(day).or_default() += 1;
            let open = !ended(day);
            provisional = stays_provisional(day, now, open, last).then_some(day);
        }
        now += 600;
    }
    assert_eq!(sealed, (D - 2..=D + 2).collect::<Vec<_>>());
    for (day, n) in &seals {
        // The first days were sealed at start, their visits long over.
        let want = if *day < D - 1 { 1 } else { 2 };
        assert_eq!(*n, want, "day {day}: {seals:?}");
    }
}

/// A day is not sealed while the writer is stopped: acknowledged events
/// may wait in the journal for the next start, some of them in that day.
#[tokio::test]
async fn nothing_is_sealed_while_the_writer_is_stopped() {
    use crate::store::events::insert_events;
    use crate::store::{EventWriter, NewEvent, NoFollower};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 2).unwrap();
    let conn = store.write_connection().unwrap();
    sites::add_site(&conn, "example.com", "UTC", false).unwrap();
    let day = crate::store::now_unix().div_euclid(DAY) - 3;
    let event = NewEvent {
        id: 1,
        site_id: 1,
        ts: day * DAY + 60,
        visit_id: 5,
        ..NewEvent::test_pageview("/")
    };
    insert_events(&conn, &[event], false).unwrap();
    let start = || {
        EventWriter::start(
            store.write_connection().unwrap(),
            16,
            Arc::new(NoFollower),
            None,
        )
        .unwrap()
    };

    let (writer, handle) = start();
    handle.shutdown();
    let sealer = Arc::new(Sealer::new(store.clone(), dir.path(), 30).with_writer(writer));
    sealer.open_columns().unwrap();
    assert!(!sealer.round().await.unwrap());
    assert!(sealer.columns().unwrap().sealed_days(1).unwrap().is_empty());
    drop(sealer);

    let (writer, handle) = start();
    let sealer = Arc::new(Sealer::new(store.clone(), dir.path(), 30).with_writer(writer));
    sealer.open_columns().unwrap();
    assert!(sealer.round().await.unwrap());
    assert_eq!(sealer.columns().unwrap().sealed_days(1).unwrap(), vec![day]);
    handle.shutdown();
}

/// A store in a new directory with `domains` added (UTC) and the id a
/// server gives its database.
fn store_with(domains: &[&str]) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 2).unwrap();
    let conn = store.write_connection().unwrap();
    for domain in domains {
        sites::add_site(&conn, domain, "UTC", false).unwrap();
    }
    ensure_database_id(&conn).unwrap();
    drop(conn);
    (dir, store)
}

/// Events of a site on `days` (two each, a minute apart), written straight
/// to the raw tables.
fn raw_events(store: &Store, site_id: i64, days: &[i64]) {
    use crate::store::NewEvent;
    use crate::store::events::insert_events;
    let conn = store.write_connection().unwrap();
    let events: Vec<NewEvent> = days
        .iter()
        .flat_map(|day| [60, 120].map(|s| (day, s)))
        .enumerate()
        .map(|(i, (day, s))| NewEvent {
            id: 1000 + i as i64,
            site_id,
            ts: day * DAY + s,
            visit_id: 5,
            ..NewEvent::test_pageview("/")
        })
        .collect();
    insert_events(&conn, &events, false).unwrap();
}

/// The events the store counts in a site's `day`.
fn store_events(sealer: &Sealer, site_id: i64, day: i64) -> i64 {
    let range = crate::report::model::TimeRange {
        start: day * DAY,
        end: (day + 1) * DAY,
    };
    let t = sealer
        .columns()
        .unwrap()
        .totals(site_id, range, &[])
        .unwrap();
    t.pageviews + t.events
}

/// An event committed in a day already sealed (a clock set back) is noted
/// as the writer commits it; the next look deletes the site's store and
/// seals it again, so it agrees with the raw tables. The note outlives a
/// stop before that look.
#[tokio::test]
async fn an_event_committed_in_a_sealed_day_restarts_the_site() {
    use crate::store::{EventWriter, NewEvent, NoFollower};
    let (dir, store) = store_with(&["example.com"]);
    let today = crate::store::now_unix().div_euclid(DAY);
    raw_events(&store, 1, &[today - 3, today - 2]);
    let late = Arc::new(LateEvents::open(dir.path()));
    let (writer, handle) = EventWriter::start(
        store.write_connection().unwrap(),
        16,
        Arc::new(NoteLate::new(Arc::new(NoFollower), late.clone())),
        None,
    )
    .unwrap();
    let sealer = |late: &Arc<LateEvents>| {
        let s = Sealer::new(store.clone(), dir.path(), 30)
            .with_writer(writer.clone())
            .with_late(late.clone());
        s.open_columns().unwrap();
        Arc::new(s)
    };
    let first = sealer(&late);
    while first.round().await.unwrap() {}
    assert_eq!(
        first.columns().unwrap().sealed_days(1).unwrap(),
        vec![today - 3, today - 2]
    );
    assert_eq!(store_events(&first, 1, today - 3), 2);

    let event = |id: i64| NewEvent {
        id,
        site_id: 1,
        ts: (today - 3) * DAY + 600,
        visit_id: 6,
        ..NewEvent::test_pageview("/late")
    };
    writer.submit(vec![event(5000)]).await.unwrap();
    while first.round().await.unwrap() {}
    assert_eq!(store_events(&first, 1, today - 3), 3);
    assert!(late.pending().is_empty());

    // Noted, then stopped before the next look: the next start acts on it.
    writer.submit(vec![event(5001)]).await.unwrap();
    drop(first);
    let late = Arc::new(LateEvents::open(dir.path()));
    assert_eq!(late.pending(), vec![(1, today - 3)]);
    let second = sealer(&late);
    while second.round().await.unwrap() {}
    assert_eq!(store_events(&second, 1, today - 3), 4);
    assert_eq!(store_events(&second, 1, today - 2), 2);
    assert!(late.pending().is_empty());
    handle.shutdown();
}

/// A day over the memory budget is not read: the site stops sealing there
/// (its sealed days stay a run of its raw days), its later days count as
/// pending, and health counts the site; the other sites go on.
#[tokio::test]
async fn a_day_over_the_budget_stops_its_site_there() {
    let (dir, store) = store_with(&["big.example", "small.example"]);
    let today = crate::store::now_unix().div_euclid(DAY);
    // Two events a day; the big site's middle day has four.
    raw_events(&store, 1, &[today - 4, today - 3, today - 3, today - 2]);
    raw_events(&store, 2, &[today - 4, today - 3, today - 2]);
    let sealer = Arc::new(Sealer::new(store.clone(), dir.path(), 30).with_max_events_per_day(3));
    sealer.open_columns().unwrap();
    while sealer.round().await.unwrap() {}
    assert_eq!(
        sealer.columns().unwrap().sealed_days(1).unwrap(),
        vec![today - 4]
    );
    assert_eq!(sealer.columns().unwrap().sealed_days(2).unwrap().len(), 3);
    assert_eq!(sealer.oversized_sites(), vec![(1, today - 3)]);
    // Nothing more to do, and nothing counted as a failure.
    assert!(!sealer.round().await.unwrap());
    let days = sealer.progress().unwrap();
    assert_eq!(days.sealed_days, 4);
    assert_eq!(days.pending_days, 2);
    assert_eq!(days.oversized_sites, 1);
    assert_eq!(sealer.errors(), 0);
}

/// `tally restore` deletes the store under its lock: while another process
/// (here another open) holds it, nothing is deleted; then the file naming
/// what it follows goes with every site.
#[tokio::test]
async fn forgetting_the_store_waits_for_its_lock() {
    let (dir, store) = store_with(&["example.com"]);
    let today = crate::store::now_unix().div_euclid(DAY);
    raw_events(&store, 1, &[today - 2]);
    let sealer = Arc::new(Sealer::new(store.clone(), dir.path(), 30));
    sealer.open_columns().unwrap();
    while sealer.round().await.unwrap() {}
    let columns = dir.path().join(COLUMNS_DIR);
    assert!(columns.join(FOLLOWS_FILE).exists());

    assert!(matches!(
        forget_all(dir.path()),
        Err(ColumnError::Busy { .. })
    ));
    assert!(matches!(
        forget_site(dir.path(), 1),
        Err(ColumnError::Busy { .. })
    ));
    assert!(columns.join(FOLLOWS_FILE).exists());
    assert_eq!(
        sealer.columns().unwrap().sealed_days(1).unwrap(),
        vec![today - 2]
    );

    drop(sealer);
    forget_all(dir.path()).unwrap();
    assert!(!columns.join(FOLLOWS_FILE).exists());
    assert!(!columns.join("1").exists());
    forget_all(dir.path()).unwrap();
}

/// A day sealed while one of its visits was open is sealed once more even
/// when the server restarts long after its last seal was due: which day is
/// provisional is kept on disk. A day sealed for the last time is not
/// sealed again after a restart.
#[tokio::test]
async fn a_provisional_day_is_sealed_for_the_last_time_after_a_late_restart() {
    use crate::store::events::insert_events;
    use crate::store::{NewEvent, VisitDims, VisitRecord, visits};
    let (dir, store) = store_with(&["example.com"]);
    let conn = store.write_connection().unwrap();
    let d = crate::store::now_unix().div_euclid(DAY) - 10;
    // A visit from 23:50 on day d, seen again at 00:50.
    let event = NewEvent {
        id: 1,
        site_id: 1,
        ts: at(d, 23) + 3000,
        visit_id: 9,
        ..NewEvent::test_pageview("/")
    };
    insert_events(&conn, &[event], false).unwrap();
    let mut visit = VisitRecord {
        id: 9,
        site_id: 1,
        visitor_id: 7,
        seq: 1,
        started_at: at(d, 23) + 3000,
        last_seen_at: at(d + 1, 0) + 3000,
        entry_page: Some("/".into()),
        exit_page: Some("/".into()),
        pageviews: 1,
        events: 0,
        interactive: 1,
        is_bounce: true,
        dims: Arc::new(VisitDims::default()),
    };
    visits::upsert(&conn, &visit).unwrap();
    let duration = |sealer: &Sealer| {
        let range = crate::report::model::TimeRange {
            start: d * DAY,
            end: (d + 1) * DAY,
        };
        let t = sealer.columns().unwrap().totals(1, range, &[]).unwrap();
        t.visit_duration_sum
    };
    let sealer = || {
        let s = Sealer::new(store.clone(), dir.path(), 30);
        s.open_columns().unwrap();
        s
    };
    let run = |s: &Sealer, now: i64| -> Vec<Step> {
        let plans = s.look(now).unwrap();
        let steps: Vec<Step> = plans.into_iter().flat_map(|(_, p)| p.steps).collect();
        for step in &steps {
            s.step(1, *step, now).unwrap();
        }
        steps
    };

    // Sealed at 01:00 while the visit is open: provisional.
    let first = sealer();
    assert_eq!(run(&first, at(d + 1, 1)), vec![Step::Seal(d)]);
    assert_eq!(duration(&first), 3600);
    drop(first);

    // The visit went on until 02:00; the server comes back two days later.
    visit.seq = 2;
    visit.last_seen_at = at(d + 1, 2);
    visits::upsert(&conn, &visit).unwrap();
    let second = sealer();
    assert_eq!(run(&second, at(d + 3, 12)), vec![Step::Reseal(d)]);
    assert_eq!(duration(&second), 7800);
    drop(second);

    // Final now: nothing more after another restart.
    let third = sealer();
    assert!(run(&third, at(d + 3, 13)).is_empty());
}

/// A site whose look fails, and then waits before it is tried again, still
/// counts its complete days as pending.
#[tokio::test]
async fn a_failing_site_still_counts_its_pending_days() {
    let (dir, store) = store_with(&["broken.example", "example.com"]);
    let today = crate::store::now_unix().div_euclid(DAY);
    raw_events(&store, 2, &[today - 2]);
    let sealer = Arc::new(Sealer::new(store.clone(), dir.path(), 30));
    sealer.open_columns().unwrap();
    while sealer.round().await.unwrap() {}
    assert_eq!(sealer.errors(), 0);
    // Its directory is a file: every look at it fails.
    std::fs::write(dir.path().join(COLUMNS_DIR).join("1"), "not a directory").unwrap();
    raw_events(&store, 1, &[today - 4, today - 3, today - 2]);
    while sealer.round().await.unwrap() {}
    assert_eq!(sealer.errors(), 1);
    let days = sealer.progress().unwrap();
    assert_eq!((days.sealed_days, days.pending_days), (1, 3));
    // Backing off now: counted all the same.
    assert!(!sealer.round().await.unwrap());
    assert_eq!(sealer.errors(), 1);
    let days = sealer.progress().unwrap();
    assert_eq!((days.sealed_days, days.pending_days), (1, 3));
}

/// Once the server stops, no step starts and a read under way is not
/// committed; a stop is no failure.
#[tokio::test]
async fn a_stop_starts_no_step() {
    let (dir, store) = store_with(&["example.com"]);
    let today = crate::store::now_unix().div_euclid(DAY);
    raw_events(&store, 1, &[today - 3, today - 2]);
    let sealer = Arc::new(Sealer::new(store.clone(), dir.path(), 30));
    sealer.open_columns().unwrap();
    sealer.stop();
    assert!(!sealer.round().await.unwrap());
    // A seal asked for all the same reads nothing it would commit.
    assert!(matches!(
        sealer.seal(1, today - 3, crate::store::now_unix(), false),
        Err(SealError::Stopping)
    ));
    assert!(sealer.columns().unwrap().sealed_days(1).unwrap().is_empty());
    assert_eq!(sealer.errors(), 0);
    // And the loop ends.
    tokio::time::timeout(Duration::from_secs(10), sealer.clone().run())
        .await
        .unwrap();
}
