//! `tally health`, the container health check: exit 0 while the server
//! answers `/api/health`, 1 once it is gone.

mod common;

use common::*;

#[test]
fn health_command_follows_the_server() {
    let env = Env::new("");
    let s = env.start();
    // The config listens on port 0; point the check at the real port.
    let port = s.base.rsplit(':').next().unwrap().to_string();
    let listen = format!("127.0.0.1:{port}");
    let run = |env: &Env| {
        std::process::Command::new(bin())
            .arg("--config")
            .arg(env.config())
            .arg("health")
            .env("TALLY_SERVER_LISTEN", &listen)
            .output()
            .unwrap()
    };
    let up = run(&env);
    assert_eq!(up.status.code(), Some(0), "{up:?}");
    assert_eq!(String::from_utf8_lossy(&up.stdout), "ok\n");
    assert_eq!(s.terminate(), 0);
    let down = run(&env);
    assert_eq!(down.status.code(), Some(1), "{down:?}");
    assert!(String::from_utf8_lossy(&down.stderr).contains("connecting to"));
}

/// Anyone gets what an uptime check needs; the traffic counters only the
/// addresses that may read `/metrics`.
#[test]
fn health_shows_traffic_counters_only_to_metrics_callers() {
    let env = Env::new(
        "trusted_proxies = [\"127.0.0.1/32\"]\n[metrics]\nallow = [\"198.51.100.7/32\"]\n",
    );
    env.add_site("example.com");
    let s = env.start();
    assert_eq!(
        s.event(&pageview("https://example.com/"), FIREFOX).status,
        202
    );

    for anonymous in [
        s.get("/api/health", &[]),
        s.get("/api/health", &[("X-Forwarded-For", "203.0.113.9")]),
    ] {
        assert_eq!(anonymous.status, 200);
        let h = anonymous.json();
        assert_eq!(h["status"], "ok");
        assert_eq!(h["database"], "ok");
        assert_eq!(h["writer"], "ok");
        assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
        assert!(h["rollups"]["pending_events"].is_u64(), "{h}");
        for counter in [
            "events",
            "writer_queue_depth",
            "writer_stats",
            "recent_traffic",
        ] {
            assert!(h.get(counter).is_none(), "{counter} shown: {h}");
        }
    }

    let allowed = s
        .get("/api/health", &[("X-Forwarded-For", "198.51.100.7")])
        .json();
    assert_eq!(allowed["status"], "ok");
    assert_eq!(allowed["events"]["accepted"], 1, "{allowed}");
    assert!(allowed["writer_queue_depth"].is_u64());
    assert!(allowed["writer_stats"]["commits"].is_u64());
    assert!(allowed["recent_traffic"]["sites_loaded"].is_u64());
}
