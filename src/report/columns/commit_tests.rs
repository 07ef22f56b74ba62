//! Tests of the column store's commits and files rather than its numbers:
//! views that are stale, racing or held by a report while appends,
//! retention and removals go on; the cap on mapped files; one process at a
//! time; files changed in place or damaged.

use super::tests::*;
use super::*;
use crate::report::model::{FilterField, FilterOp};

/// A view older than the site file left in the cache (a reader that read
/// the site file before a commit and cached its view after it) must not
/// be what the next append numbers new strings from: committed days would
/// then read other strings.
#[test]
fn a_stale_cached_view_does_not_change_the_dictionary() {
    let dir = tempfile::tempdir().unwrap();
    let store = ColumnStore::open(dir.path()).unwrap();
    store.append_day(1, D0, small_day(0, 1, "/a")).unwrap();
    let v0 = store.view(1).unwrap();
    store.append_day(1, D0 + 1, small_day(1, 2, "/b")).unwrap();
    store.views.locked().force(1, v0);
    store.append_day(1, D0 + 2, small_day(2, 3, "/c")).unwrap();
    drop(store);
    let reopened = ColumnStore::open(dir.path()).unwrap();
    assert_eq!(pages(&reopened, 1, 3), ["/a", "/b", "/c"]);
}

/// The same with a cached "nothing sealed" (a first report racing the
/// first append).
#[test]
fn a_stale_cached_none_does_not_rewrite_the_dictionary() {
    let dir = tempfile::tempdir().unwrap();
    let store = ColumnStore::open(dir.path()).unwrap();
    store.append_day(1, D0, small_day(0, 1, "/a")).unwrap();
    store.views.locked().force(1, None);
    store.append_day(1, D0 + 1, small_day(1, 2, "/b")).unwrap();
    drop(store);
    let reopened = ColumnStore::open(dir.path()).unwrap();
    assert_eq!(pages(&reopened, 1, 2), ["/a", "/b"]);
}

/// First reports racing appends: every report answers (from the commit it
/// started with), and what the cache keeps afterwards is the newest commit.
#[test]
fn first_reports_racing_appends_answer_and_leave_the_newest_commit() {
    for round in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(ColumnStore::open(dir.path()).unwrap());
        store.append_day(1, D0, small_day(0, 1, "/a")).unwrap();
        store.views.locked().committed(1, None);
        let reader = {
            let store = store.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    store.totals(1, days(4), &[]).unwrap();
                    if round % 2 == 0 {
                        store.views.locked().committed(1, None);
                    }
                }
            })
        };
        for d in 1..4 {
            store
                .append_day(1, D0 + d, small_day(d, d + 1, &format!("/p{d}")))
                .unwrap();
            // The newest day sealed again: its file is replaced.
            store
                .append_day(1, D0 + d, small_day(d, d + 1, &format!("/p{d}")))
                .unwrap();
        }
        reader.join().unwrap();
        assert_eq!(store.totals(1, days(4), &[]).unwrap().visits, 4);
        assert_eq!(pages(&store, 1, 4), ["/a", "/p1", "/p2", "/p3"]);
    }
}

/// A report holding the view of the previous commit reads its days after
/// the newest day is sealed again (its file replaced and deleted).
#[test]
fn a_report_reads_its_commit_after_the_newest_day_is_sealed_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = ColumnStore::open(dir.path()).unwrap();
    store.append_day(1, D0, small_day(0, 1, "/a")).unwrap();
    store.append_day(1, D0 + 1, small_day(1, 2, "/b")).unwrap();
    let held = store.view(1).unwrap().unwrap();
    store.append_day(1, D0 + 1, small_day(1, 2, "/b2")).unwrap();
    let got = totals::series(&held, &[days(2)], &[]).unwrap();
    assert_eq!(got[0].pageviews, 2);
    // And after a retention pass deleted its first day.
    store.drop_before(1, D0 + 1).unwrap();
    let got = totals::series(&held, &[days(2)], &[]).unwrap();
    assert_eq!(got[0].pageviews, 2);
}

/// The cached views keep at most so many files mapped, the least recently
/// read dropped first; reports of a dropped view map it again.
#[test]
fn cached_views_keep_a_bounded_number_of_files_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let store = ColumnStore::open(dir.path()).unwrap();
    *store.views.locked() = cache::ViewCache::new(9);
    for site in 1..=4 {
        for d in 0..2 {
            store
                .append_day(site, D0 + d, small_day(d, 1, "/a"))
                .unwrap();
        }
    }
    // Four files a view: two fit.
    for site in [1, 2, 3, 1, 4, 2] {
        assert_eq!(store.totals(site, days(2), &[]).unwrap().visits, 2);
        assert!(store.views.locked().mapped() <= 9);
    }
    let cached: Vec<bool> = (1..=4)
        .map(|s| store.views.locked().get(s).is_some())
        .collect();
    assert_eq!(cached, [false, true, false, true]);
}

/// One process at a time: a second open of the directory (a command beside
/// the server) is refused, and deletes nothing the first may be writing.
#[test]
fn a_second_open_of_the_directory_is_refused_and_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = ColumnStore::open(dir.path()).unwrap();
    store.append_day(1, D0, small_day(0, 1, "/a")).unwrap();
    let unnamed = dir.path().join("1").join("20001-9.seg.tmp");
    std::fs::write(&unnamed, b"an append under way").unwrap();
    let second = ColumnStore::open(dir.path());
    assert!(
        matches!(second, Err(ColumnError::Busy { .. })),
        "{:?}",
        second.err()
    );
    assert!(unnamed.exists());
    drop(store);
    ColumnStore::open(dir.path()).unwrap();
    assert!(!unnamed.exists());
}

/// A mapped segment overwritten in place with another valid one (what the
/// store never does; a restore by copying over the files might): reports
/// may be wrong, but do not panic or read out of bounds.
#[test]
fn a_segment_overwritten_in_place_is_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let store = ColumnStore::open(dir.path()).unwrap();
    store.append_day(1, D0, small_day(0, 1, "/a")).unwrap();
    let mut big = DayRows::default();
    for k in 0..200 {
        let t = (D0 + 1) * DAY + 100 + k;
        big.visits.push(one_visit(5000 + k, k, t));
        let path = format!("/p{k}");
        big.events
            .push(event(50_000 + k, 5000 + k, k, t, "pageview", &path));
    }
    store.append_day(1, D0 + 1, big).unwrap();
    store.totals(1, days(2), &[]).unwrap();
    let mut segs: Vec<std::path::PathBuf> = std::fs::read_dir(dir.path().join("1"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    let bytes = std::fs::read(&segs[1]).unwrap();
    // Truncated, then written: the same file, mapped.
    std::fs::write(&segs[0], &bytes).unwrap();
    let page = Filter {
        field: FilterField::Page,
        op: FilterOp::Contains,
        values: vec![Some("p".into())],
    };
    for filters in [vec![], vec![page]] {
        let r = std::panic::catch_unwind(|| {
            let _ = store.totals(1, days(2), &filters);
            let _ = store.series(1, &[days(1), days(2)], &filters);
            for dim in [Dimension::Page, Dimension::Visit(VisitColumn::ExitPage)] {
                let _ = store.breakdown(1, days(2), &dim, &filters, true, 10, 0);
            }
        });
        assert!(r.is_ok(), "panicked");
    }
}

/// One damaged site file: that site is set aside (it is sealed again from
/// the raw tables), the others open.
#[test]
fn a_damaged_site_file_sets_that_site_aside() {
    let dir = tempfile::tempdir().unwrap();
    let store = ColumnStore::open(dir.path()).unwrap();
    store.append_day(1, D0, small_day(0, 1, "/a")).unwrap();
    store.append_day(2, D0, small_day(0, 1, "/a")).unwrap();
    drop(store);
    let f = dir.path().join("2").join(site::SITE_FILE);
    let mut b = std::fs::read(&f).unwrap();
    let n = b.len();
    b[n - 1] ^= 1;
    std::fs::write(&f, b).unwrap();
    let store = ColumnStore::open(dir.path()).unwrap();
    assert_eq!(store.sealed_days(1).unwrap(), [D0]);
    assert_eq!(store.sealed_days(2).unwrap(), Vec::<i64>::new());
    assert!(!dir.path().join("2").exists());
    store.append_day(2, D0, small_day(0, 1, "/z")).unwrap();
    assert_eq!(pages(&store, 2, 1), ["/z"]);
}

/// What a crash left of an earlier removal of the same site does not stop
/// a removal.
#[test]
fn a_removal_goes_past_what_an_earlier_one_left() {
    let dir = tempfile::tempdir().unwrap();
    let store = ColumnStore::open(dir.path()).unwrap();
    store.append_day(1, D0, small_day(0, 1, "/a")).unwrap();
    let left = dir.path().join("1.removed");
    std::fs::create_dir(&left).unwrap();
    std::fs::write(left.join("site.tcf"), b"old").unwrap();
    store.remove_site(1).unwrap();
    assert!(!left.exists() && !dir.path().join("1").exists());
    assert_eq!(store.sealed_days(1).unwrap(), Vec::<i64>::new());
}

/// A dictionary whose checksum holds but whose offsets go past the strings
/// and come back down.
#[test]
fn dictionary_offsets_past_the_strings_are_damage() {
    use super::container::{Kind, Section, write};
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("dict-1.tcf");
    let offsets = Section::U32(&[0, 100, 5]);
    write(&p, Kind::Dictionary, &[offsets, Section::U8(b"abcdefghij")]).unwrap();
    let r = std::panic::catch_unwind(|| dictionary::Dictionary::open(&p, 2).map(|_| ()));
    assert!(
        matches!(r, Ok(Err(ColumnError::Damaged { .. }))),
        "{:?}",
        r.map_err(|_| "panicked")
    );
}

/// A snapshot answers from its commit after the site's days are dropped or
/// the site removed: a report that checked what the store holds reads
/// those days, never nothing.
#[test]
fn a_snapshot_answers_from_its_commit_after_retention_and_removal() {
    let dir = tempfile::tempdir().unwrap();
    let store = ColumnStore::open(dir.path()).unwrap();
    store.append_day(1, D0, small_day(0, 1, "/a")).unwrap();
    store.append_day(1, D0 + 1, small_day(1, 2, "/b")).unwrap();
    let snapshot = store.snapshot(1).unwrap().unwrap();
    assert_eq!(snapshot.newest_day(), Some(D0 + 1));
    let before = snapshot.totals(days(3), &[]).unwrap();
    assert!(before.pageviews > 0);
    store.drop_before(1, D0 + 1).unwrap();
    assert_eq!(snapshot.totals(days(3), &[]).unwrap(), before);
    store.remove_site(1).unwrap();
    assert_eq!(snapshot.totals(days(3), &[]).unwrap(), before);
    assert_eq!(store.totals(1, days(3), &[]).unwrap(), Totals::default());
    assert!(store.snapshot(1).unwrap().is_none());
}
