//! A stand-in for dockerd's `/events`: a growing log of events, replayed from
//! `since` inclusively as the daemon does, then followed live. Each
//! connection follows a [`Plan`] that can end it early in various ways.

use std::io::Write;
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use portainer::Timestamp;

use super::{Conn, TestServer, event_line};

/// How one connection goes.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// End the body cleanly after this long.
    pub close_after: Option<Duration>,
    /// End the body cleanly after this many events.
    pub close_after_events: Option<usize>,
    /// After this many events, send half of the next one and hang up.
    pub cut_after_events: Option<usize>,
    /// Send this raw line after the first event.
    pub inject_after_first: Option<String>,
}

impl Plan {
    /// Serve until the client or the test goes away.
    pub fn forever() -> Self {
        Plan::default()
    }
}

struct Log {
    events: Mutex<Vec<(i64, String)>>,
    grown: Condvar,
    closed: AtomicBool,
}

pub struct FakeDaemon {
    log: Arc<Log>,
    server: Option<TestServer>,
}

impl FakeDaemon {
    /// Starts the daemon; `plan` says how connection N (from 0) goes.
    pub fn start(plan: impl Fn(usize) -> Plan + Send + Sync + 'static) -> FakeDaemon {
        let log = Arc::new(Log {
            events: Mutex::new(Vec::new()),
            grown: Condvar::new(),
            closed: AtomicBool::new(false),
        });
        let shared = log.clone();
        let server = TestServer::start(move |conn| serve(&shared, conn, plan(conn.index)));
        FakeDaemon {
            log,
            server: Some(server),
        }
    }

    pub fn url(&self) -> String {
        self.server.as_ref().unwrap().url()
    }

    pub fn server(&self) -> &TestServer {
        self.server.as_ref().unwrap()
    }

    /// Appends a container event to the log; live streams send it at once.
    pub fn push(&self, action: &str, actor: &str, time_nano: i64) {
        self.push_line(time_nano, event_line(action, actor, time_nano));
    }

    /// Appends a raw line with the given time to the log.
    pub fn push_line(&self, time_nano: i64, line: String) {
        self.log.events.lock().push((time_nano, line));
        self.log.grown.notify_all();
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        self.log.closed.store(true, Ordering::SeqCst);
        self.log.grown.notify_all();
        drop(self.server.take());
    }
}

fn serve(log: &Log, conn: &mut Conn, plan: Plan) {
    let since = conn
        .request
        .query("since")
        .map(|s| s.parse::<Timestamp>().unwrap().unix_nanos())
        .unwrap_or(i64::MIN);
    let started = Instant::now();
    conn.start_chunked("application/json");
    let mut next = 0;
    let mut sent = 0;
    loop {
        let pending: Vec<String> = {
            let mut events = log.events.lock();
            while next >= events.len() && !log.closed.load(Ordering::SeqCst) {
                let deadline = plan
                    .close_after
                    .map(|d| (started + d).saturating_duration_since(Instant::now()))
                    .unwrap_or(Duration::from_millis(50))
                    .min(Duration::from_millis(50));
                log.grown.wait_for(&mut events, deadline);
                if plan.close_after.is_some_and(|d| started.elapsed() >= d) {
                    break;
                }
            }
            let fresh = events[next..]
                .iter()
                .filter(|(time, _)| *time >= since)
                .map(|(_, line)| line.clone())
                .collect();
            next = events.len();
            fresh
        };
        if log.closed.load(Ordering::SeqCst) {
            return;
        }
        for line in pending {
            if plan.cut_after_events == Some(sent) {
                let half = &line.as_bytes()[..line.len() / 2];
                let _ = conn
                    .stream
                    .write_all(format!("{:x}\r\n", line.len() + 1).as_bytes());
                let _ = conn.stream.write_all(half);
                let _ = conn.stream.shutdown(Shutdown::Both);
                return;
            }
            if plan.close_after_events == Some(sent) {
                conn.end_chunked();
                return;
            }
            conn.chunk(format!("{line}\n").as_bytes());
            sent += 1;
            if sent == 1 {
                if let Some(raw) = &plan.inject_after_first {
                    conn.chunk(format!("{raw}\n").as_bytes());
                }
            }
        }
        if plan.close_after.is_some_and(|d| started.elapsed() >= d) {
            conn.end_chunked();
            return;
        }
        if conn.stream.take_error().ok().flatten().is_some() {
            return;
        }
    }
}
