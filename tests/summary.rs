//! Weekly summaries: `tally summary` tells a known week in words; the server
//! writes last week's summary, shows it on the dashboard and e-mails it once
//! to the site's users through the configured SMTP server.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use chrono::{Datelike, NaiveDate};
use common::*;

/// Tally CSV rows: (visit, time, path, source, referrer).
fn csv(rows: &[(i64, String, &str, &str, &str)]) -> String {
    let mut out = String::from(
        "time,name,hostname,path,visit,visitor,interactive,props,revenue_amount,revenue_currency,\
         scroll_depth,engaged_ms,referrer,source,utm_medium,utm_source,utm_campaign,utm_term,\
         utm_content,country,region,city,browser,browser_version,os,os_version,device\n",
    );
    for (visit, time, path, source, referrer) in rows {
        out.push_str(&format!(
            "{time},pageview,example.com,{path},{visit},{visit},1,,,,,,{referrer},{source},,,,,,,,,Firefox,121,Linux,,Desktop\n"
        ));
    }
    out
}

/// Two visitors the week before `monday`, three in its week.
fn two_weeks(monday: NaiveDate) -> String {
    let at = |days: i64, hms: &str| format!("{}T{hms}Z", monday + chrono::Duration::days(days));
    csv(&[
        (1, at(-6, "10:00:00"), "/", "Google", "www.google.com/"),
        (
            1,
            at(-6, "10:01:00"),
            "/pricing",
            "Google",
            "www.google.com/",
        ),
        (2, at(-6, "11:00:00"), "/", "Google", "www.google.com/"),
        (3, at(1, "09:00:00"), "/", "Google", "www.google.com/"),
        (
            3,
            at(1, "09:01:00"),
            "/blog/launch",
            "Google",
            "www.google.com/",
        ),
        (
            3,
            at(1, "09:02:00"),
            "/pricing",
            "Google",
            "www.google.com/",
        ),
        (4, at(2, "10:00:00"), "/", "Google", "www.google.com/"),
        (
            5,
            at(2, "11:00:00"),
            "/blog/launch",
            "Hacker News",
            "news.ycombinator.com/",
        ),
        (
            5,
            at(2, "11:01:00"),
            "/",
            "Hacker News",
            "news.ycombinator.com/",
        ),
    ])
}

const EXPECTED: &str = "3 visitors came, up 50% from 2 the week before.
They viewed 6 pages, up 100% from 3 the week before; 33% left after one page, and a visit lasted 1 min on average.

Top pages: / (3), /blog/launch (2), /pricing (1).
New among the top pages: /blog/launch.
Top sources: Google (2), Hacker News (1).
New among the top sources: Hacker News.
";

fn import(env: &Env, text: &str) {
    let file = env.dir.path().join("weeks.csv");
    std::fs::write(&file, text).unwrap();
    env.tally(&[
        "import",
        "--format",
        "tally-csv",
        "--site",
        "example.com",
        file.to_str().unwrap(),
    ]);
}

#[test]
fn summary_command_tells_a_known_week() {
    let env = Env::new("");
    env.add_site("example.com");
    import(
        &env,
        &two_weeks(NaiveDate::from_ymd_opt(2025, 3, 10).unwrap()),
    );
    let text = env.tally(&["summary", "example.com", "--week", "2025-03-10"]);
    assert_eq!(
        text,
        format!("example.com, week of 10–16 March 2025\n\n{EXPECTED}")
    );
    let tuesday = env.tally_raw(&["summary", "example.com", "--week", "2025-03-11"]);
    assert_eq!(tuesday.status.code(), Some(2));
}

/// An SMTP server that accepts every message and hands each over as
/// (recipients, data).
fn smtp_sink() -> (u16, mpsc::Receiver<(Vec<String>, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut out = stream.try_clone().unwrap();
                let mut lines = BufReader::new(stream);
                let mut say = |s: &str| out.write_all(format!("{s}\r\n").as_bytes()).unwrap();
                say("220 sink ESMTP");
                let mut to = Vec::new();
                let mut line = String::new();
                while lines.read_line(&mut line).unwrap_or(0) > 0 {
                    let cmd = line.trim_end().to_string();
                    line.clear();
                    let upper = cmd.to_ascii_uppercase();
                    if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                        say("250 sink");
                    } else if upper.starts_with("RCPT TO:") {
                        to.push(cmd[8..].trim().trim_matches(['<', '>']).to_string());
                        say("250 ok");
                    } else if upper == "DATA" {
                        say("354 go on");
                        let mut data = String::new();
                        loop {
                            let mut l = String::new();
                            lines.read_line(&mut l).unwrap();
                            if l.trim_end() == "." {
                                break;
                            }
                            data.push_str(&l);
                        }
                        say("250 queued");
                        tx.send((std::mem::take(&mut to), data)).unwrap();
                    } else if upper == "QUIT" {
                        say("221 bye");
                        return;
                    } else {
                        say("250 ok");
                    }
                }
            });
        }
    });
    (port, rx)
}

#[test]
fn last_week_is_written_shown_and_emailed_once() {
    let (port, mail) = smtp_sink();
    let env = Env::new(&format!(
        "[smtp]\nhost = \"127.0.0.1\"\nport = {port}\nsecurity = \"none\"\nfrom = \"Tally <tally@example.com>\"\n"
    ));
    env.add_site("example.com");
    env.add_user("admin@example.com", &[]);
    env.add_user("member@example.com", &["example.com"]);
    env.add_user("muted@example.com", &[]);
    env.db()
        .execute(
            "UPDATE users SET weekly_summary = 0 WHERE email = 'muted@example.com'",
            [],
        )
        .unwrap();
    let today = chrono::Utc::now().date_naive();
    let monday = today
        - chrono::Duration::days(today.weekday().num_days_from_monday().into())
        - chrono::Duration::weeks(1);
    import(&env, &two_weeks(monday));
    // The site has existed for weeks.
    env.db()
        .execute("UPDATE sites SET created_at = 0, public = 1", [])
        .unwrap();

    let s = env.start();
    // One message per recipient; the user who opted out gets none.
    let mut messages: Vec<(Vec<String>, String)> = (0..2)
        .map(|_| {
            mail.recv_timeout(Duration::from_secs(30))
                .expect("a summary e-mail")
        })
        .collect();
    messages.sort();
    assert_eq!(messages[0].0, ["admin@example.com"]);
    assert_eq!(messages[1].0, ["member@example.com"]);
    // Quoted-printable: long lines are folded with soft breaks.
    let data = messages.remove(0).1.replace("=\r\n", "");
    assert!(data.contains("To stop these e-mails"), "{data}");
    assert!(data.contains("From: Tally <tally@example.com>"), "{data}");
    assert!(data.contains("Subject: example.com, week of"), "{data}");
    assert!(data.contains("3 visitors came, up 50%"), "{data}");
    let page = s.get("/example.com", &[]);
    assert!(
        page.body.contains("Weekly summary: example.com, week of"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("<p>Top sources: Google (2), Hacker News (1).</p>"),
        "{}",
        page.body
    );
    let metrics = s.get("/metrics", &[]).body;
    assert!(
        metrics.contains("tally_summary_emails_total{result=\"sent\"} 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tally_summaries_written_total 1\n"),
        "{metrics}"
    );
    drop(s);

    // Once: a restart neither writes nor sends it again.
    assert!(mail.recv_timeout(Duration::from_millis(500)).is_err());
    let s = env.start();
    assert!(mail.recv_timeout(Duration::from_secs(3)).is_err());
    drop(s);
    assert_eq!(
        env.count("SELECT COUNT(*) FROM summaries WHERE emailed_at IS NOT NULL"),
        1
    );
}

#[test]
fn a_failing_mail_server_is_retried_once_logged_and_not_fatal() {
    // A port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = Env::new(&format!(
        "[smtp]\nhost = \"127.0.0.1\"\nport = {port}\nsecurity = \"none\"\nfrom = \"tally@example.com\"\n"
    ));
    env.add_site("example.com");
    env.add_user("admin@example.com", &[]);
    env.db()
        .execute("UPDATE sites SET created_at = 0", [])
        .unwrap();
    let s = env.start();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut lines = Vec::new();
    while !lines
        .iter()
        .any(|l: &String| l.contains("sending a weekly summary failed") && l.contains("ERROR"))
    {
        assert!(std::time::Instant::now() < deadline, "{lines:#?}");
        std::thread::sleep(Duration::from_millis(100));
        lines.extend(s.log_lines());
    }
    assert!(lines.iter().any(|l| l.contains("retrying")), "{lines:#?}");
    let metrics = s.get("/metrics", &[]).body;
    assert!(
        metrics.contains("tally_summary_emails_total{result=\"failed\"} 1\n"),
        "{metrics}"
    );
    assert_eq!(s.get("/api/health", &[]).status, 200);
    drop(s);
    assert_eq!(
        env.count("SELECT COUNT(*) FROM summaries WHERE email_error IS NOT NULL"),
        1
    );
}
