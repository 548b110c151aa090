//! The listener against in-test servers: callbacks, subscribers, reconnects,
//! final errors and stopping.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, unbounded};
use parking_lot::Mutex;
use portainer::{Client, Listener, ListenerResult, StreamState};

use common::{Conn, PATIENCE, TestServer, event_line, portainer, stop_promptly, wait_for};

const KEY: &str = "ptr_listener_test_key";
const T0: i64 = 1_700_000_000_000_000_000;

/// Streams `lines`, one chunk each, then keeps the stream open.
fn stream_then_hold(lines: Vec<String>) -> impl Fn(&mut Conn) + Send + Sync + 'static {
    move |conn| {
        conn.start_chunked("application/json");
        for line in &lines {
            conn.chunk(format!("{line}\n").as_bytes());
        }
        conn.hold();
    }
}

fn client(server: &TestServer) -> Client {
    Client::new(&server.url(), KEY).unwrap()
}

fn quick_listener(server: &TestServer, endpoint: Option<u64>) -> Listener {
    Listener::builder(client(server))
        .endpoint(endpoint)
        .reconnect_interval(Duration::from_millis(50))
        .build()
}

fn next(rx: &Receiver<ListenerResult>, what: &str) -> ListenerResult {
    rx.recv_timeout(PATIENCE)
        .unwrap_or_else(|err| panic!("expected {what}: {err}"))
}

/// Receives events with these actions, in order, and then no more for a
/// while: nothing replayed after a reconnect is delivered twice.
fn expect_each_once(rx: &Receiver<ListenerResult>, actions: &[&str]) {
    let got: Vec<String> = actions
        .iter()
        .map(|_| {
            next(rx, "an event")
                .event
                .action()
                .map(str::to_string)
                .unwrap()
        })
        .collect();
    assert_eq!(got, actions);
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(300)),
        Err(RecvTimeoutError::Timeout),
        "an event was delivered twice"
    );
}

fn actor(result: &ListenerResult) -> &str {
    result.event.actor_id().unwrap()
}

static FUNCTION_CALLS: AtomicUsize = AtomicUsize::new(0);

fn count_calls(_: &ListenerResult) {
    FUNCTION_CALLS.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn callbacks_run_once_each_and_a_panic_stops_nothing() {
    let lines = (0..3)
        .map(|i| event_line("start", &format!("c{i}"), T0 + i))
        .collect();
    let server = portainer("[]", stream_then_hold(lines));
    let listener = quick_listener(&server, Some(1));

    let panics = Arc::new(AtomicUsize::new(0));
    let seen_panics = panics.clone();
    listener.register_callback(move |_| {
        seen_panics.fetch_add(1, Ordering::SeqCst);
        panic!("a callback that always fails");
    });
    let first = listener.register_callback(count_calls);
    assert_eq!(listener.register_callback(count_calls), first);
    let after_panic = Arc::new(Mutex::new(Vec::new()));
    let log = after_panic.clone();
    listener.register_callback(move |result| log.lock().push(actor(result).to_string()));
    let rx = listener.subscribe();

    listener.start().unwrap();
    for i in 0..3 {
        assert_eq!(actor(&next(&rx, "an event")), format!("c{i}"));
    }
    // Callbacks run before subscribers are fed, so all have run for event 3.
    assert_eq!(
        FUNCTION_CALLS.load(Ordering::SeqCst),
        3,
        "registered twice, called once"
    );
    assert_eq!(panics.load(Ordering::SeqCst), 3);
    assert_eq!(*after_panic.lock(), ["c0", "c1", "c2"]);
    assert!(listener.is_running());
    assert_eq!(listener.status()[0].state, StreamState::Streaming);
    listener.stop();
}

#[test]
fn unregistered_callbacks_are_not_called_and_dropped_receivers_are_forgotten() {
    let (go, wait) = unbounded::<()>();
    let wait = Arc::new(Mutex::new(wait));
    let server = portainer("[]", move |conn| {
        conn.start_chunked("application/json");
        conn.chunk(format!("{}\n", event_line("create", "a", T0)).as_bytes());
        let _ = wait.lock().recv_timeout(PATIENCE);
        conn.chunk(format!("{}\n", event_line("start", "a", T0 + 1)).as_bytes());
        conn.hold();
    });
    let listener = quick_listener(&server, Some(1));
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let id = listener.register_callback(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let kept = listener.subscribe();
    let dropped = listener.subscribe();
    listener.start().unwrap();

    assert_eq!(
        next(&kept, "the first event").event.action(),
        Some("create")
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(listener.unregister_callback(id));
    drop(dropped);
    go.send(()).unwrap();

    assert_eq!(
        next(&kept, "the second event").event.action(),
        Some("start")
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "called after unregistering"
    );
    listener.stop();
}

#[test]
fn a_closed_stream_is_resumed_without_losing_or_repeating_events() {
    let a = event_line("create", "a", T0 + 123);
    let b = event_line("start", "b", T0 + 123);
    let c = event_line("die", "a", T0 + 200_000_000);
    let (a2, b2, c2) = (a.clone(), b.clone(), c.clone());
    let server = portainer("[]", move |conn| {
        conn.start_chunked("application/json");
        if conn.index == 0 {
            conn.chunk(format!("{a2}\n{b2}\n").as_bytes());
            conn.end_chunked();
        } else {
            // Daemon-style inclusive replay from `since`, then a new event.
            conn.chunk(format!("{a2}\n").as_bytes());
            conn.chunk(format!("{b2}\n").as_bytes());
            conn.chunk(format!("{c2}\n").as_bytes());
            conn.hold();
        }
    });
    let listener = quick_listener(&server, Some(1));
    let rx = listener.subscribe();
    listener.start().unwrap();

    expect_each_once(&rx, &["create", "start", "die"]);
    let requests = server.requests();
    assert_eq!(requests[0].query("since"), None);
    assert_eq!(
        requests[1].query("since").as_deref(),
        Some("1700000000.000000123")
    );
    let status = &listener.status()[0];
    assert_eq!(status.events_delivered, 3);
    assert_eq!(status.reconnects, 1);
    listener.stop();
}

#[test]
fn a_refused_key_ends_the_endpoint_without_retrying() {
    let server = portainer("[]", |conn| {
        conn.respond(
            401,
            "application/json",
            r#"{"message":"Invalid JWT token","details":"Unauthorized"}"#,
        );
    });
    common::capture_logs();
    let listener = quick_listener(&server, Some(4));
    let rx = listener.subscribe();
    listener.start().unwrap();
    wait_for("the endpoint to fail", PATIENCE, || {
        listener.status()[0].state.is_ended()
    });
    let StreamState::Failed { status, reason } = listener.status()[0].state.clone() else {
        panic!("expected a failure, got {:?}", listener.status());
    };
    assert_eq!(status, Some(401));
    assert!(
        reason.contains("Invalid JWT token") && !reason.contains(KEY),
        "{reason}"
    );
    // With every endpoint ended, the subscribers' channels close.
    assert_eq!(
        rx.recv_timeout(PATIENCE),
        Err(RecvTimeoutError::Disconnected)
    );
    thread::sleep(Duration::from_millis(200));
    assert_eq!(server.requests().len(), 1, "retried after 401");
    let errors = common::logged("endpoint 4: giving up");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("ERROR") && errors[0].contains("401"),
        "{errors:?}"
    );
    assert!(common::all_logs().iter().all(|line| !line.contains(KEY)));
    listener.stop();
}

#[test]
fn every_endpoint_mode_skips_endpoints_without_docker() {
    let server = portainer(
        r#"[{"Id":2,"Name":"b","Type":2,"Status":1,"URL":""},
            {"Id":5,"Name":"k","Type":5,"Status":1,"URL":""},
            {"Id":1,"Name":"a","Type":1,"Status":1,"URL":""}]"#,
        stream_then_hold(vec![]),
    );
    let listener = quick_listener(&server, None);
    listener.start().unwrap();
    let ids: Vec<u64> = listener.status().iter().map(|s| s.endpoint_id).collect();
    assert_eq!(ids, [1, 2]);
    wait_for("both streams", PATIENCE, || {
        listener
            .status()
            .iter()
            .all(|s| s.state == StreamState::Streaming)
    });
    let mut paths: Vec<String> = server
        .requests()
        .iter()
        .map(|r| r.path().to_string())
        .filter(|p| p.ends_with("/events"))
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/api/endpoints/1/docker/events",
            "/api/endpoints/2/docker/events"
        ]
    );
    listener.stop();
}

#[test]
fn start_twice_opens_one_stream_and_restart_after_stop_works() {
    let server = portainer("[]", stream_then_hold(vec![event_line("start", "a", T0)]));
    let listener = quick_listener(&server, Some(1));
    let rx = listener.subscribe();
    listener.start().unwrap();
    listener.start().unwrap();
    next(&rx, "the first run's event");
    assert_eq!(server.requests().len(), 1);
    listener.stop();
    listener.stop();
    assert!(!listener.is_running());
    assert_eq!(
        rx.recv_timeout(PATIENCE),
        Err(RecvTimeoutError::Disconnected)
    );
    assert_eq!(listener.status()[0].state, StreamState::Stopped);

    let rx = listener.subscribe();
    listener.start().unwrap();
    next(&rx, "the second run's event");
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn stop_returns_while_streams_are_idle() {
    let server = portainer("[]", stream_then_hold(vec![]));
    let listener = quick_listener(&server, Some(1));
    let rx = listener.subscribe();
    listener.start().unwrap();
    wait_for("the stream to open", PATIENCE, || {
        listener.status()[0].state == StreamState::Streaming
    });
    let started = Instant::now();
    listener.stop();
    assert!(
        started.elapsed() < PATIENCE,
        "stop took {:?}",
        started.elapsed()
    );
    assert_eq!(
        rx.try_recv(),
        Err(crossbeam_channel::TryRecvError::Disconnected)
    );
}

#[test]
fn stop_from_inside_a_callback_does_not_deadlock() {
    let server = portainer("[]", stream_then_hold(vec![event_line("start", "a", T0)]));
    let listener = Arc::new(quick_listener(&server, Some(1)));
    let weak: Weak<Listener> = Arc::downgrade(&listener);
    let (done, finished) = unbounded();
    listener.register_callback(move |_| {
        if let Some(listener) = weak.upgrade() {
            listener.stop();
        }
        let _ = done.send(());
    });
    listener.start().unwrap();
    finished
        .recv_timeout(PATIENCE)
        .expect("the callback to return");
    wait_for("the listener to stop", PATIENCE, || !listener.is_running());
}

#[test]
fn dropping_the_listener_stops_it() {
    let server = portainer("[]", stream_then_hold(vec![]));
    let listener = quick_listener(&server, Some(1));
    let rx = listener.subscribe();
    listener.start().unwrap();
    wait_for("the stream to open", PATIENCE, || {
        listener.status()[0].state == StreamState::Streaming
    });
    drop(listener);
    assert_eq!(
        rx.recv_timeout(PATIENCE),
        Err(RecvTimeoutError::Disconnected)
    );
}

#[test]
fn the_reconnect_interval_can_change_while_running() {
    let server = portainer("[]", |conn| {
        conn.respond(502, "text/html", "<html>bad gateway</html>")
    });
    let listener = Listener::builder(client(&server))
        .endpoint(1)
        .reconnect_interval(Duration::from_secs(3600))
        .build();
    listener.set_reconnect_interval(Duration::from_millis(20));
    assert_eq!(listener.reconnect_interval(), Duration::from_millis(20));
    listener.start().unwrap();
    wait_for("a few attempts", PATIENCE, || server.requests().len() >= 3);
    wait_for("a waiting state that cites the 502", PATIENCE, || {
        matches!(
            &listener.status()[0].state,
            StreamState::Waiting { reason, .. } if reason.contains("502")
        )
    });
    listener.stop();
}

/// A fake Portainer behind a login: `/api/auth` hands out `token-1`,
/// `token-2`, ... for the right password. `token-1` expires after one
/// stream (later requests with it get 401); the others do not.
struct LoginPortainer {
    server: TestServer,
    logins: Arc<AtomicUsize>,
}

const PASSWORD: &str = "s3cret-pw";

impl LoginPortainer {
    /// `stream` runs for each accepted stream request, with its token number.
    fn start(stream: impl Fn(&mut Conn, usize) + Send + Sync + 'static) -> LoginPortainer {
        let logins = Arc::new(AtomicUsize::new(0));
        let first_token_uses = AtomicUsize::new(0);
        let counted = logins.clone();
        let server = TestServer::start(move |conn| {
            if conn.request.path() == "/api/auth" {
                let body: serde_json::Value = serde_json::from_slice(&conn.request.body).unwrap();
                if body != serde_json::json!({"username": "admin", "password": PASSWORD}) {
                    conn.respond(
                        422,
                        "application/json",
                        r#"{"message":"Invalid credentials"}"#,
                    );
                    return;
                }
                let token = counted.fetch_add(1, Ordering::SeqCst) + 1;
                let reply = format!(r#"{{"jwt":"token-{token}"}}"#);
                conn.respond(200, "application/json", &reply);
                return;
            }
            assert!(
                conn.request.header("X-API-Key").is_none(),
                "key and token sent together"
            );
            let token = conn
                .request
                .header("Authorization")
                .and_then(|value| value.strip_prefix("Bearer token-"))
                .and_then(|n| n.parse::<usize>().ok());
            let expired = token == Some(1) && first_token_uses.fetch_add(1, Ordering::SeqCst) > 0;
            match token {
                Some(token) if !expired => stream(conn, token),
                _ => conn.respond(
                    401,
                    "application/json",
                    r#"{"message":"Invalid JWT token","details":"Unauthorized"}"#,
                ),
            }
        });
        LoginPortainer { server, logins }
    }

    fn client(&self, password: &str) -> Client {
        Client::builder(&self.server.url())
            .login("admin", password)
            .build()
            .unwrap()
    }
}

#[test]
fn an_expired_token_means_one_login_and_a_gap_free_resume() {
    let a = event_line("create", "a", T0 + 123);
    let b = event_line("start", "a", T0 + 456);
    let c = event_line("die", "a", T0 + 789);
    let portainer = LoginPortainer::start(move |conn, token| {
        conn.start_chunked("application/json");
        if token == 1 {
            conn.chunk(format!("{a}\n{b}\n").as_bytes());
            conn.end_chunked();
        } else {
            // Inclusive replay from `since`, then a new event.
            assert_eq!(
                conn.request.query("since").as_deref(),
                Some("1700000000.000000456")
            );
            conn.chunk(format!("{b}\n{c}\n").as_bytes());
            conn.hold();
        }
    });
    let listener = Listener::builder(portainer.client(PASSWORD))
        .endpoint(1)
        .reconnect_interval(Duration::from_millis(50))
        .build();
    let rx = listener.subscribe();
    listener.start().unwrap();

    expect_each_once(&rx, &["create", "start", "die"]);
    assert_eq!(portainer.logins.load(Ordering::SeqCst), 2);
    let status = &listener.status()[0];
    assert_eq!(status.state, StreamState::Streaming);
    assert_eq!(
        status.reconnects, 1,
        "the 401 was retried inside one attempt"
    );
    listener.stop();
}

#[test]
fn a_wrong_password_ends_the_endpoint_and_is_never_shown() {
    common::capture_logs();
    let portainer = LoginPortainer::start(|_, _| unreachable!("no stream without a login"));
    let wrong = "wrong-pw-that-must-not-leak";
    let client = portainer.client(wrong);
    let shown = format!("{client:?}");
    let listener = Listener::builder(client)
        .endpoint(1)
        .reconnect_interval(Duration::from_millis(50))
        .build();
    listener.start().unwrap();
    wait_for("the reader to give up", PATIENCE, || {
        listener.status()[0].state.is_ended()
    });
    let state = listener.status()[0].state.clone();
    let StreamState::Failed { status, reason } = &state else {
        panic!("{state:?}")
    };
    assert_eq!(*status, Some(401));
    assert!(reason.contains("Invalid credentials"), "{reason}");
    for text in [shown, reason.clone()]
        .into_iter()
        .chain(common::all_logs())
    {
        assert!(!text.contains(wrong), "{text}");
    }
    assert_eq!(portainer.logins.load(Ordering::SeqCst), 0);
    listener.stop();
}

#[test]
fn a_builder_proxy_carries_the_stream_and_stop_still_unblocks_it() {
    let server = portainer("[]", stream_then_hold(vec![event_line("start", "a", T0)]));
    let proxy = TestServer::start(|conn| conn.tunnel());
    let client = Client::builder(&server.url())
        .api_key(KEY)
        .proxy(proxy.url())
        .build()
        .unwrap();
    let listener = Listener::builder(client).endpoint(1).build();
    let rx = listener.subscribe();
    listener.start().unwrap();
    assert_eq!(actor(&next(&rx, "the event through the proxy")), "a");
    let tunnels = proxy.requests();
    assert_eq!(tunnels.len(), 1);
    assert_eq!(
        tunnels[0].target,
        server.url().trim_start_matches("http://")
    );

    stop_promptly(&listener);
}
