//! `tally backup` while the server ingests, `tally restore` (refused while a
//! server runs, refused for a damaged file), and scheduled backups with
//! rotation.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;

fn events_in(path: &std::path::Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn backup_during_ingest_then_restore_gives_the_same_counts() {
    let env = Env::new("");
    env.add_site("example.com");
    let key = env.api_key();
    let s = env.start();
    // Two clients keep sending pageviews while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let senders: Vec<_> = (0..2)
        .map(|t| {
            let (url, stop, sent) = (s.url("/api/event"), stop.clone(), sent.clone());
            std::thread::spawn(move || {
                let agent = agent();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) || i < 200 {
                    let body = pageview(&format!("https://example.com/p{i}"));
                    let r = reply(
                        agent
                            .post(&url)
                            .header("User-Agent", &format!("{CHROME} t{t}"))
                            .header("Content-Type", "text/plain")
                            .send(&body),
                    );
                    assert_eq!(r.status, 202);
                    sent.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    while sent.load(Ordering::Relaxed) < 300 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let backup = env.dir.path().join("copy.db");
    let out = env.tally(&["backup", backup.to_str().unwrap()]);
    let during = sent.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for t in senders {
        t.join().unwrap();
    }
    let total = sent.load(Ordering::Relaxed) as i64;
    assert!(out.contains("Backed up 1 sites"), "{out}");
    let in_backup = events_in(&backup);
    assert!(
        in_backup >= 300 && in_backup <= during as i64 && in_backup < total,
        "backup holds {in_backup} of {total} events (300 before it started, {during} when it ended)"
    );
    assert!(out.contains(&format!("{in_backup} events")), "{out}");
    assert!(!backup.with_extension("db.partial").exists());
    // The backup is one self-contained file.
    assert!(!env.dir.path().join("copy.db-wal").exists());

    // Not while the server runs, and nothing changes.
    let refused = env.tally_raw(&["restore", backup.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("a server is running"), "{err}");
    s.settle();
    assert_eq!(s.terminate(), 0);
    assert_eq!(env.count("SELECT COUNT(*) FROM events"), total);

    let out = env.tally(&["restore", backup.to_str().unwrap()]);
    assert!(out.contains(&format!("{in_backup} events")), "{out}");
    assert!(out.contains("kept as"), "{out}");
    assert_eq!(env.count("SELECT COUNT(*) FROM events"), in_backup);
    let kept: Vec<_> = std::fs::read_dir(env.data_dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("tally.db.before-restore-") && !n.contains("-wal"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(events_in(&env.data_dir().join(&kept[0])), total);

    // The restored server reports exactly what the backup held, rollups
    // included (those behind the snapshot are rebuilt from its events).
    let s = env.start();
    s.settle();
    let r = s.stats(
        &key,
        "/api/v1/stats/aggregate?site_id=example.com&period=day&metrics=pageviews,visitors",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["results"]["pageviews"]["value"],
        in_backup,
        "{}",
        r.body
    );
}

#[test]
fn a_damaged_backup_is_refused_and_changes_nothing() {
    let env = Env::new("");
    env.add_site("example.com");
    let bad = env.dir.path().join("bad.db");
    std::fs::write(&bad, vec![7u8; 8192]).unwrap();
    let out = env.tally_raw(&["restore", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a usable Tally database"), "{err}");
    assert!(env.tally(&["site", "list"]).contains("example.com"));
    let missing = env.tally_raw(&["restore", "/nonexistent/backup.db"]);
    assert_eq!(missing.status.code(), Some(2));
    // Refuses to overwrite an existing file.
    let exists = env.tally_raw(&["backup", bad.to_str().unwrap()]);
    assert_eq!(exists.status.code(), Some(2));
    assert_eq!(std::fs::read(&bad).unwrap(), vec![7u8; 8192]);
}

#[test]
fn scheduled_backups_run_when_due_and_keep_the_newest() {
    let backups = tempfile::tempdir().unwrap();
    // Three older backups, the newest of them two hours old.
    let hour = 3600;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let stamp = tally::store::backup::scheduled_name;
    for ago in [4 * hour, 3 * hour, 2 * hour] {
        std::fs::write(backups.path().join(stamp(now - ago)), b"old").unwrap();
    }
    std::fs::write(backups.path().join("notes.txt"), b"not a backup").unwrap();
    let env = Env::new(&format!(
        "[backup]\ndir = {:?}\ninterval_hours = 1\nkeep = 2\n",
        backups.path().display().to_string()
    ));
    env.add_site("example.com");
    let s = env.start();
    assert_eq!(
        s.event(&pageview("https://example.com/"), CHROME).status,
        202
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lines = Vec::new();
    while !lines
        .iter()
        .any(|l: &String| l.contains("scheduled backup written"))
    {
        assert!(Instant::now() < deadline, "no backup logged: {lines:#?}");
        std::thread::sleep(Duration::from_millis(100));
        lines.extend(s.log_lines());
    }
    let mut names: Vec<String> = std::fs::read_dir(backups.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    assert_eq!(names.len(), 3, "{names:?}");
    assert_eq!(names[0], "notes.txt");
    assert_eq!(names[1], stamp(now - 2 * hour));
    let newest = backups.path().join(&names[2]);
    assert!(events_in(&newest) <= 1);
    let metrics = s.get("/metrics", &[]).body;
    assert!(
        metrics.contains("tally_backups_total{result=\"ok\"} 1\n"),
        "{metrics}"
    );
}
