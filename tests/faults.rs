//! The listener under faults, against in-test servers: cuts, replays, bad
//! lines, refusals, retries, slow callbacks and endpoint changes. Each test
//! says which failure it reproduces.

mod common;

use std::io::Write;
use std::net::{Shutdown, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use parking_lot::Mutex;
use portainer::{Client, Listener, ListenerResult, StreamState};

use common::daemon::{FakeDaemon, Plan};
use common::{PATIENCE, TestServer, event_line, wait_for};

const KEY: &str = "ptr_faults_secret_key";
const T0: i64 = 1_700_000_000_000_000_000;

fn listener_on(url: &str, endpoint: Option<u64>, interval: Duration) -> Listener {
    Listener::builder(Client::new(url, KEY).unwrap())
        .endpoint(endpoint)
        .reconnect_interval(interval)
        .build()
}

/// Receives `count` events, then checks that no more arrive for a moment.
fn exactly(rx: &Receiver<ListenerResult>, count: usize) -> Vec<ListenerResult> {
    let got: Vec<ListenerResult> = (0..count)
        .map(|i| {
            rx.recv_timeout(PATIENCE)
                .unwrap_or_else(|err| panic!("event {i} of {count}: {err}"))
        })
        .collect();
    match rx.recv_timeout(Duration::from_millis(300)) {
        Err(RecvTimeoutError::Timeout) => got,
        other => panic!("an event too many: {other:?}"),
    }
}

fn actors(results: &[ListenerResult]) -> Vec<String> {
    results
        .iter()
        .map(|r| r.event.actor_id().unwrap_or("-").to_string())
        .collect()
}

#[test]
fn cut_mid_event_then_daemon_style_replay_delivers_each_event_once() {
    let daemon = FakeDaemon::start(|index| Plan {
        cut_after_events: (index == 0).then_some(1),
        ..Plan::forever()
    });
    daemon.push("create", "first", T0 + 10);
    daemon.push("start", "second", T0 + 20);
    let listener = listener_on(&daemon.url(), Some(1), Duration::from_millis(50));
    let rx = listener.subscribe();
    listener.start().unwrap();
    let got = exactly(&rx, 2);
    assert_eq!(actors(&got), ["first", "second"]);
    assert_eq!(daemon.server().requests().len(), 2);
    listener.stop();
}

#[test]
fn three_events_in_one_second_survive_a_drop_after_the_first() {
    let daemon = FakeDaemon::start(|index| Plan {
        close_after_events: (index == 0).then_some(1),
        ..Plan::forever()
    });
    daemon.push("start", "a", T0 + 123);
    daemon.push("start", "b", T0 + 500_000);
    daemon.push("start", "c", T0 + 200_000_000);
    let listener = listener_on(&daemon.url(), Some(1), Duration::from_millis(50));
    let rx = listener.subscribe();
    listener.start().unwrap();
    assert_eq!(actors(&exactly(&rx, 3)), ["a", "b", "c"]);
    let requests = daemon.server().requests();
    assert_eq!(
        requests[1].query("since").as_deref(),
        Some("1700000000.000000123")
    );
    listener.stop();
}

#[test]
fn an_html_line_between_events_is_skipped_and_logged() {
    common::capture_logs();
    let daemon = FakeDaemon::start(|_| Plan {
        inject_after_first: Some("<html><body><h1>502 Bad Gateway</h1></body></html>".into()),
        ..Plan::forever()
    });
    daemon.push("create", "html-a", T0 + 1);
    daemon.push("start", "html-b", T0 + 2);
    let listener = listener_on(&daemon.url(), Some(77), Duration::from_millis(50));
    let rx = listener.subscribe();
    listener.start().unwrap();
    assert_eq!(actors(&exactly(&rx, 2)), ["html-a", "html-b"]);
    assert_eq!(listener.status()[0].lines_skipped, 1);
    let skipped = common::logged("endpoint 77: skipped a line");
    assert!(
        skipped
            .iter()
            .any(|l| l.starts_with("WARN") && l.contains("<html>")),
        "{skipped:?}"
    );
    listener.stop();
}

#[test]
fn odd_but_valid_events_are_delivered() {
    let daemon = FakeDaemon::start(|_| Plan::forever());
    daemon.push_line(
        T0 + 1,
        format!(r#"{{"Type":"container","Action":"start","Actor":{{"ID":"x1","Attributes":null}},"timeNano":{}}}"#, T0 + 1),
    );
    daemon.push_line(
        T0 + 2,
        format!(
            r#"{{"Type":"daemon","Action":"reload","timeNano":{}}}"#,
            T0 + 2
        ),
    );
    daemon.push_line(
        T0 + 3,
        format!(
            r#"{{"Type":"network","Action":"connect","Actor":{{"ID":"ab"}},"timeNano":{}}}"#,
            T0 + 3
        ),
    );
    let listener = listener_on(&daemon.url(), Some(1), Duration::from_millis(50));
    let rx = listener.subscribe();
    listener.start().unwrap();
    let got = exactly(&rx, 3);
    assert_eq!(actors(&got), ["x1", "-", "ab"]);
    assert_eq!(got[0].event.actor().unwrap().attributes().len(), 0);
    assert!(got[1].event.actor().is_none());
    listener.stop();
}

#[test]
fn a_front_that_closes_streams_every_few_seconds_loses_and_repeats_nothing() {
    // For a minute, the front ends every stream after 2 s while an event
    // arrives every 50 ms.
    let daemon = Arc::new(FakeDaemon::start(|_| Plan {
        close_after: Some(Duration::from_secs(2)),
        ..Plan::forever()
    }));
    let listener = listener_on(&daemon.url(), Some(1), Duration::from_millis(100));
    let rx = listener.subscribe();
    listener.start().unwrap();
    let count = 1200;
    let pusher = {
        let daemon = daemon.clone();
        thread::spawn(move || {
            for i in 0..count {
                daemon.push("exec_start", &format!("e{i}"), T0 + i as i64 * 50_000_000);
                thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let got = exactly(&rx, count);
    pusher.join().unwrap();
    let expected: Vec<String> = (0..count).map(|i| format!("e{i}")).collect();
    assert_eq!(actors(&got), expected);
    assert!(
        listener.status()[0].reconnects >= 20,
        "{:?}",
        listener.status()
    );
    listener.stop();
}

#[test]
fn refusals_end_each_endpoint_once_with_status_and_message() {
    common::capture_logs();
    let server = TestServer::start(|conn| {
        match conn.request.path() {
        "/api/endpoints" => conn.respond(
            200,
            "application/json",
            r#"[{"Id":11,"Name":"a","Type":1},{"Id":12,"Name":"b","Type":1},{"Id":13,"Name":"c","Type":2}]"#,
        ),
        "/api/endpoints/11/docker/events" => conn.respond(
            401,
            "application/json",
            r#"{"message":"Invalid JWT token","details":"Unauthorized"}"#,
        ),
        "/api/endpoints/12/docker/events" => conn.respond(
            403,
            "application/json",
            r#"{"message":"Access denied to resource","details":"Forbidden"}"#,
        ),
        _ => conn.respond(
            404,
            "application/json",
            r#"{"message":"Unable to find an environment with the specified identifier inside the database","details":"object not found"}"#,
        ),
    }
    });
    let listener = listener_on(&server.url(), None, Duration::from_millis(20));
    let rx = listener.subscribe();
    listener.start().unwrap();
    // Every endpoint ends for good, so the run ends and the channel closes.
    assert_eq!(
        rx.recv_timeout(PATIENCE),
        Err(RecvTimeoutError::Disconnected)
    );
    let expected = [
        (11, 401, "Invalid JWT token"),
        (12, 403, "Access denied"),
        (13, 404, "Unable to find an environment"),
    ];
    let status = listener.status();
    for ((id, code, message), status) in expected.iter().zip(&status) {
        assert_eq!(status.endpoint_id, *id);
        assert_eq!(status.reconnects, 0);
        match &status.state {
            StreamState::Failed { status, reason } => {
                assert_eq!(*status, Some(*code));
                assert!(reason.contains(message), "{reason}");
                assert!(!reason.contains(KEY));
            }
            other => panic!("endpoint {id}: {other:?}"),
        }
        let errors = common::logged(&format!("endpoint {id}: giving up"));
        assert_eq!(errors.len(), 1, "{errors:?}");
    }
    let stream_requests = server
        .requests()
        .iter()
        .filter(|r| r.path().ends_with("/events"))
        .count();
    assert_eq!(stream_requests, 3, "a refusal was retried");
    assert!(common::all_logs().iter().all(|l| !l.contains(KEY)));
    listener.stop();
}

#[test]
fn server_errors_are_retried_with_growing_delays_at_default_settings() {
    let line = event_line("start", "after-errors", T0);
    let server = TestServer::start(move |conn| {
        match conn.index {
        0 => conn.respond(
            502,
            "text/html",
            "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>",
        ),
        1 => conn.respond(502, "text/plain", ""),
        2 => conn.respond(503, "application/json", r#"{"message":"unavailable"}"#),
        _ => {
            conn.start_chunked("application/x-ndjson");
            conn.chunk(format!("{line}\n").as_bytes());
            conn.hold();
        }
    }
    });
    let times = Arc::new(Mutex::new(Vec::new()));
    let listener = Listener::builder(Client::new(&server.url(), KEY).unwrap())
        .endpoint(1)
        .build();
    let rx = listener.subscribe();
    let statuses = listener.subscribe_status();
    let started = Instant::now();
    listener.start().unwrap();
    let watcher = {
        let times = times.clone();
        thread::spawn(move || {
            for status in statuses {
                if status.state == StreamState::Connecting {
                    times.lock().push(Instant::now());
                }
            }
        })
    };
    let event = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the event after the errors");
    assert_eq!(event.event.actor_id(), Some("after-errors"));
    listener.stop();
    watcher.join().unwrap();

    let requests = server.requests();
    assert_eq!(requests.len(), 4);
    let attempts = times.lock().clone();
    let in_first_ten_seconds = attempts
        .iter()
        .filter(|t| t.duration_since(started) < Duration::from_secs(10))
        .count();
    assert!(
        in_first_ten_seconds < 10,
        "{in_first_ten_seconds} attempts in 10 s"
    );
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[0] >= Duration::from_secs(5), "{gaps:?}");
    assert!(
        gaps[1] > gaps[0] && gaps[2] > gaps[1],
        "delays must grow: {gaps:?}"
    );
}

#[test]
fn refused_connections_then_an_empty_history_recover_without_duplicates() {
    let listener_socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener_socket.local_addr().unwrap();
    let url = format!("http://{addr}");
    let listener = listener_on(&url, Some(1), Duration::from_millis(50));
    let rx = listener.subscribe();
    let states = listener.subscribe_status();
    listener.start().unwrap();

    // First the stream: one event, then the server goes away entirely.
    let (mut conn, _) = listener_socket.accept().unwrap();
    let head =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    conn.write_all(head.as_bytes()).unwrap();
    let first = format!("{}\n", event_line("start", "before", T0 + 5));
    conn.write_all(format!("{:x}\r\n{first}\r\n", first.len()).as_bytes())
        .unwrap();
    assert_eq!(
        rx.recv_timeout(PATIENCE).unwrap().event.actor_id(),
        Some("before")
    );
    drop(listener_socket);
    conn.shutdown(Shutdown::Both).unwrap();
    drop(conn);

    // Connections are refused until three attempts have failed.
    wait_for("three refused attempts", PATIENCE, || {
        listener.status()[0].reconnects >= 3
    });
    let listener_socket = TcpListener::bind(addr).unwrap();
    let (mut conn, _) = listener_socket.accept().unwrap();
    // A restarted daemon: nothing to replay, then a new event.
    conn.write_all(head.as_bytes()).unwrap();
    let second = format!("{}\n", event_line("start", "after", T0 + 9));
    conn.write_all(format!("{:x}\r\n{second}\r\n", second.len()).as_bytes())
        .unwrap();
    assert_eq!(
        rx.recv_timeout(PATIENCE).unwrap().event.actor_id(),
        Some("after")
    );
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(200)),
        Err(RecvTimeoutError::Timeout)
    );

    let seen: Vec<StreamState> = states.try_iter().map(|s| s.state).collect();
    let waiting = seen
        .iter()
        .position(
            |s| matches!(s, StreamState::Waiting { reason, .. } if reason.contains("connection")),
        )
        .unwrap_or_else(|| panic!("no waiting state seen: {seen:?}"));
    assert!(
        seen[waiting..].contains(&StreamState::Streaming),
        "no recovery seen: {seen:?}"
    );
    listener.stop();
}

#[test]
fn a_slow_callback_never_stalls_the_socket() {
    let count = 2000;
    let slowest_write = Arc::new(Mutex::new(Duration::ZERO));
    let server = {
        let slowest_write = slowest_write.clone();
        TestServer::start(move |conn| {
            conn.start_chunked("application/json");
            for i in 0..count {
                let line = format!("{}\n", event_line("start", &format!("s{i}"), T0 + i as i64));
                let before = Instant::now();
                conn.chunk(line.as_bytes());
                let took = before.elapsed();
                let mut slowest = slowest_write.lock();
                *slowest = (*slowest).max(took);
            }
            conn.hold();
        })
    };
    let listener = listener_on(&server.url(), Some(1), Duration::from_millis(50));
    let seen = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let calls = Arc::new(AtomicUsize::new(0));
    {
        let (seen, calls) = (seen.clone(), calls.clone());
        listener.register_callback(move |result| {
            thread::sleep(Duration::from_millis(5));
            seen.lock()
                .push(result.event.actor_id().unwrap().to_string());
            calls.fetch_add(1, Ordering::SeqCst);
        });
    }
    listener.start().unwrap();
    wait_for("2000 slow callbacks", Duration::from_secs(120), || {
        calls.load(Ordering::SeqCst) >= count
    });
    let expected: Vec<String> = (0..count).map(|i| format!("s{i}")).collect();
    assert_eq!(*seen.lock(), expected);
    assert_eq!(listener.status()[0].events_dropped, 0);
    let slowest = *slowest_write.lock();
    assert!(
        slowest < Duration::from_millis(100),
        "a server write blocked for {slowest:?}"
    );
    listener.stop();
}

#[test]
fn endpoints_added_and_removed_are_followed_and_dropped() {
    let endpoints = Arc::new(Mutex::new(r#"[{"Id":1,"Name":"a","Type":1}]"#.to_string()));
    let server = {
        let endpoints = endpoints.clone();
        TestServer::start(move |conn| {
            if conn.request.path() == "/api/endpoints" {
                let body = endpoints.lock().clone();
                conn.respond(200, "application/json", &body);
            } else {
                conn.start_chunked("application/json");
                conn.hold();
            }
        })
    };
    let listener = Listener::builder(Client::new(&server.url(), KEY).unwrap())
        .endpoint_refresh(Some(Duration::from_millis(100)))
        .build();
    listener.start().unwrap();
    let ids = |listener: &Listener| -> Vec<u64> {
        listener.status().iter().map(|s| s.endpoint_id).collect()
    };
    assert_eq!(ids(&listener), [1]);
    *endpoints.lock() = r#"[{"Id":2,"Name":"b","Type":4},{"Id":3,"Name":"k","Type":6}]"#.into();
    wait_for("endpoint 2 to replace endpoint 1", PATIENCE, || {
        ids(&listener) == [2]
    });
    wait_for("endpoint 2 to stream", PATIENCE, || {
        listener.status()[0].state == StreamState::Streaming
    });
    listener.stop();
}

#[test]
fn stop_is_prompt_while_waiting_to_reconnect_and_mid_burst() {
    // Waiting: the server refuses with 502 and the interval is an hour.
    let failing = TestServer::start(|conn| conn.respond(502, "text/plain", ""));
    let waiting = listener_on(&failing.url(), Some(1), Duration::from_secs(3600));
    waiting.start().unwrap();
    wait_for("the reader to wait", PATIENCE, || {
        matches!(waiting.status()[0].state, StreamState::Waiting { .. })
    });
    let started = Instant::now();
    waiting.stop();
    assert!(started.elapsed() < PATIENCE);

    // Mid-burst: the server writes events as fast as it can.
    let bursting = TestServer::start(|conn| {
        conn.start_chunked("application/json");
        for i in 0..1_000_000i64 {
            let line = format!("{}\n", event_line("start", "burst", T0 + i));
            if conn
                .stream
                .write_all(format!("{:x}\r\n{line}\r\n", line.len()).as_bytes())
                .is_err()
            {
                return;
            }
        }
    });
    let burst = listener_on(&bursting.url(), Some(1), Duration::from_millis(50));
    let rx = burst.subscribe();
    burst.start().unwrap();
    rx.recv_timeout(PATIENCE).expect("the burst to start");
    let started = Instant::now();
    burst.stop();
    assert!(started.elapsed() < PATIENCE);
    // Drain what was queued before the stop; then the channel is closed.
    while rx.try_recv().is_ok() {}
    assert_eq!(
        rx.try_recv(),
        Err(crossbeam_channel::TryRecvError::Disconnected)
    );
}
