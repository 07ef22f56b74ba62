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
