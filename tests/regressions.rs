//! Regression tests for bugs a review found: each is named for the
//! behaviour it guards and failed before its fix.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use portainer::{Client, EventQuery, Listener, ListenerResult};

use common::{PATIENCE, TestServer, event_line, portainer, wait_for};

const KEY: &str = "ptr_SECRET_reviewer_key";
const T0: i64 = 1_700_000_000_000_000_000;

/// A fake Portainer whose streams send one event and then stay open.
fn one_event_then_silence() -> TestServer {
    portainer("[]", |conn| {
        conn.start_chunked("application/json");
        conn.chunk(format!("{}\n", event_line("start", "a", T0)).as_bytes());
        conn.hold();
    })
}

/// A listener on endpoint 1 of `server`, with default settings.
fn one_endpoint(server: &TestServer) -> Listener {
    Listener::builder(Client::new(&server.url(), KEY).unwrap())
        .endpoint(1)
        .build()
}

/// The actor ids a subscriber receives over two seconds, and how the
/// receiving ended: a timeout while its run goes on, a disconnect if the run
/// that owned it ended.
fn actors_for_two_seconds(
    rx: &crossbeam_channel::Receiver<ListenerResult>,
) -> (Vec<String>, RecvTimeoutError) {
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(2);
    loop {
        match rx.recv_deadline(end) {
            Ok(r) => got.push(r.event.actor_id().unwrap().to_string()),
            Err(e) => return (got, e),
        }
    }
}

fn tasks() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// A redirect is not followed, so the API key never reaches another host.
#[test]
fn a_redirect_to_another_host_never_carries_the_api_key() {
    let other = TestServer::start(|conn| {
        if conn.request.path() == "/api/endpoints" {
            conn.respond(200, "application/json", "[]");
        } else {
            conn.start_chunked("application/json");
            conn.end_chunked();
        }
    });
    let other_url = other.url().replace("127.0.0.1", "localhost");
    let server = TestServer::start(move |conn| {
        let head = format!(
            "HTTP/1.1 302 Found\r\nLocation: {other_url}{}\r\nContent-Length: 0\r\n\r\n",
            conn.request.target
        );
        let _ = conn.stream.write_all(head.as_bytes());
        conn.hold();
    });
    let client = Client::new(&server.url(), KEY).unwrap();
    let _ = client.endpoints();
    let _ = client.events(1, &EventQuery::new()).map(|s| s.count());
    let leaked: Vec<_> = other
        .requests()
        .iter()
        .filter_map(|r| r.header("x-api-key").map(|k| format!("{} {}", r.target, k)))
        .collect();
    assert!(leaked.is_empty(), "key sent to another host: {leaked:?}");
}

/// After a stop() from inside a callback, a new run's subscribers are not
/// disconnected by the old dispatcher on its way out, nor fed its events.
#[test]
fn stop_from_a_callback_then_restart_keeps_the_new_subscribers() {
    let server = portainer("[]", |conn| {
        conn.start_chunked("application/json");
        conn.chunk(
            format!(
                "{}\n",
                event_line("start", &format!("c{}", conn.index), T0 + conn.index as i64)
            )
            .as_bytes(),
        );
        conn.hold();
    });
    static LISTENER: OnceLock<Listener> = OnceLock::new();
    let listener = LISTENER.get_or_init(|| {
        Listener::builder(Client::new(&server.url(), KEY).unwrap())
            .endpoint(1)
            .reconnect_interval(Duration::from_millis(50))
            .build()
    });
    static ONCE: AtomicBool = AtomicBool::new(false);
    listener.register_callback(|_r: &ListenerResult| {
        if !ONCE.swap(true, Ordering::SeqCst) {
            LISTENER.get().unwrap().stop();
            // the callback has a little more work to do
            thread::sleep(Duration::from_millis(300));
        }
    });
    listener.start().unwrap();
    wait_for("stop from callback", PATIENCE, || {
        ONCE.load(Ordering::SeqCst) && !listener.is_running()
    });
    let rx = listener.subscribe();
    let status = listener.subscribe_status();
    listener.start().unwrap();
    let (got, outcome) = actors_for_two_seconds(&rx);
    let st: Vec<_> = status.try_iter().map(|s| s.state).collect();
    let status_disconnected = status
        .recv_timeout(Duration::from_millis(10))
        .is_err_and(|e| e.is_disconnected());
    println!(
        "run-2 subscriber got {got:?}, then {outcome:?}; running={}; status rx got {st:?}, disconnected={status_disconnected}",
        listener.is_running()
    );
    listener.stop();
    assert!(
        !got.contains(&"c0".to_string()),
        "event of the stopped run delivered to a subscriber of the new run: {got:?}"
    );
    assert_eq!(
        outcome,
        crossbeam_channel::RecvTimeoutError::Timeout,
        "new run's subscriber disconnected while running; got {got:?}"
    );
}

/// Once every endpoint has ended for good, the run is over: the listener
/// says it is not running, and `start` begins a new run.
#[test]
fn after_every_endpoint_ended_start_begins_a_new_run() {
    let server = portainer("[]", |conn| {
        conn.respond(
            401,
            "application/json",
            r#"{"message":"Invalid JWT token"}"#,
        )
    });
    let listener = one_endpoint(&server);
    let first = listener.subscribe();
    listener.start().unwrap();
    assert_eq!(
        first.recv_timeout(PATIENCE),
        Err(RecvTimeoutError::Disconnected)
    );
    wait_for("the run to end", PATIENCE, || !listener.is_running());
    let second = listener.subscribe();
    listener.start().unwrap();
    assert_eq!(
        second.recv_timeout(PATIENCE),
        Err(RecvTimeoutError::Disconnected)
    );
    assert_eq!(
        server.requests().len(),
        2,
        "the second start made no request"
    );
    listener.stop();
}

/// A stream that opens and ends at once, again and again, warns once.
#[test]
fn a_flapping_stream_warns_once() {
    common::capture_logs();
    let server = portainer("[]", |conn| {
        conn.start_chunked("application/json");
        conn.end_chunked();
    });
    let listener = Listener::builder(Client::new(&server.url(), KEY).unwrap())
        .endpoint(77)
        .reconnect_interval(Duration::from_millis(20))
        .build();
    listener.start().unwrap();
    thread::sleep(Duration::from_millis(1500));
    listener.stop();
    let warns = common::logged("WARN")
        .into_iter()
        .filter(|l| l.contains("endpoint 77"))
        .count();
    let infos = common::logged("INFO")
        .into_iter()
        .filter(|l| l.contains("endpoint 77"))
        .count();
    assert!(warns <= 1, "warned {warns} times, info {infos} times");
}

/// A zero reconnect interval still waits and backs off: no busy loop.
#[test]
fn a_zero_interval_still_backs_off() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let server = portainer("[]", move |conn| {
        h.fetch_add(1, Ordering::SeqCst);
        conn.respond(502, "text/plain", "");
    });
    let listener = Listener::builder(Client::new(&server.url(), KEY).unwrap())
        .endpoint(1)
        .reconnect_interval(Duration::ZERO)
        .build();
    listener.start().unwrap();
    thread::sleep(Duration::from_secs(1));
    listener.stop();
    let n = hits.load(Ordering::SeqCst);
    assert!(n < 20, "{n} requests in one second with backoff");
}

/// An HTTP/1.0 body delimited by the connection's close delivers events as
/// they arrive.
#[test]
fn an_http10_close_delimited_stream_is_live() {
    let server = portainer("[]", |conn| {
        let _ = conn
            .stream
            .write_all(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n");
        let _ = conn
            .stream
            .write_all(format!("{}\n", event_line("start", "a", T0)).as_bytes());
        conn.hold();
    });
    let client = Client::new(&server.url(), KEY).unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let c = client.clone();
    let h = thread::spawn(move || {
        let mut s = c.events(1, &EventQuery::new()).unwrap();
        let canc = s.canceller();
        tx.send(Some(canc.clone())).unwrap();
        let first = s.next();
        tx.send(None).unwrap();
        first.map(|r| r.map(|e| e.actor_id().map(str::to_string)))
    });
    let canc = rx.recv().unwrap().unwrap();
    let r = rx.recv_timeout(Duration::from_secs(2));
    canc.cancel();
    let first = h.join().unwrap();
    assert!(
        r.is_ok(),
        "no event within 2 s on HTTP/1.0 close-delimited body; got {first:?}"
    );
}

/// A body with a Content-Length instead of chunks delivers every event.
#[test]
fn a_content_length_body_delivers_all_events() {
    let server = portainer("[]", |conn| {
        let body = format!(
            "{}\n{}",
            event_line("start", "a", T0),
            event_line("die", "a", T0 + 1)
        );
        conn.respond(200, "application/json", &body);
    });
    let client = Client::new(&server.url(), KEY).unwrap();
    let events = client
        .recent_events(
            1,
            &EventQuery::new().since(portainer::Timestamp::from_unix_nanos(T0)),
        )
        .unwrap();
    assert_eq!(events.len(), 2);
}

/// stop() returns while a server never sends response headers.
#[test]
fn stop_returns_while_headers_never_come() {
    let server = portainer("[]", |conn| conn.hold());
    let listener = one_endpoint(&server);
    listener.start().unwrap();
    thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    listener.stop();
    let e = t.elapsed();
    assert!(e < PATIENCE, "{e:?}");
}

/// A `fn` pointer registered twice is called once per event.
#[test]
fn a_fn_pointer_registered_twice_is_called_once() {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    fn cb(_: &ListenerResult) {
        CALLS.fetch_add(1, Ordering::SeqCst);
    }
    let server = one_event_then_silence();
    let listener = one_endpoint(&server);
    let f: fn(&ListenerResult) = cb;
    let a = listener.register_callback(f);
    let b = listener.register_callback(f);
    let rx = listener.subscribe();
    listener.start().unwrap();
    rx.recv_timeout(PATIENCE).unwrap();
    listener.stop();
    assert_eq!(CALLS.load(Ordering::SeqCst), 1, "ids {a:?} {b:?}");
}

/// A second stop() racing the first waits, like it, for the callback under
/// way to finish.
#[test]
fn a_concurrent_stop_waits_for_the_callback() {
    let server = one_event_then_silence();
    let listener = Arc::new(one_endpoint(&server));
    static IN_CB: AtomicBool = AtomicBool::new(false);
    static DONE: AtomicBool = AtomicBool::new(false);
    listener.register_callback(|_r: &ListenerResult| {
        IN_CB.store(true, Ordering::SeqCst);
        thread::sleep(Duration::from_millis(400));
        DONE.store(true, Ordering::SeqCst);
    });
    listener.start().unwrap();
    wait_for("callback", PATIENCE, || IN_CB.load(Ordering::SeqCst));
    let l = listener.clone();
    let a = thread::spawn(move || l.stop());
    thread::sleep(Duration::from_millis(50));
    listener.stop(); // second stop
    let done_when_second_returned = DONE.load(Ordering::SeqCst);
    let threads_left = tasks();
    a.join().unwrap();
    assert!(
        done_when_second_returned,
        "second stop() returned while a callback was still running ({threads_left} threads alive)"
    );
}

/// A stop() on one thread (a slow callback under way) does not disconnect
/// the subscribers of a start() racing it on another.
#[test]
fn stop_racing_start_keeps_the_new_subscribers() {
    let server = portainer("[]", |conn| {
        conn.start_chunked("application/json");
        for i in 0..3 {
            conn.chunk(
                format!(
                    "{}\n",
                    event_line(
                        "start",
                        &format!("r{}-{i}", conn.index),
                        T0 + 10 * conn.index as i64 + i
                    )
                )
                .as_bytes(),
            );
            thread::sleep(Duration::from_millis(300));
        }
        conn.hold();
    });
    let listener = Arc::new(one_endpoint(&server));
    static IN_CB: AtomicBool = AtomicBool::new(false);
    static FIRST: AtomicBool = AtomicBool::new(true);
    listener.register_callback(|_r: &ListenerResult| {
        if FIRST.swap(false, Ordering::SeqCst) {
            IN_CB.store(true, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(300));
        }
    });
    listener.start().unwrap();
    wait_for("callback", PATIENCE, || IN_CB.load(Ordering::SeqCst));
    let l = listener.clone();
    let a = thread::spawn(move || l.stop());
    wait_for("stop took the run", PATIENCE, || !listener.is_running());
    let rx = listener.subscribe();
    listener.start().unwrap();
    a.join().unwrap();
    let (got, outcome) = actors_for_two_seconds(&rx);
    listener.stop();
    assert_eq!(
        outcome,
        RecvTimeoutError::Timeout,
        "subscriber of the running listener was disconnected after {got:?}"
    );
}

/// Dropping the listener inside its own callback ends its threads.
#[test]
fn dropping_the_listener_inside_its_callback_ends_its_threads() {
    let server = one_event_then_silence();
    static SLOT: parking_lot::Mutex<Option<Listener>> = parking_lot::Mutex::new(None);
    static DROPPED: AtomicBool = AtomicBool::new(false);
    let base = tasks();
    let listener = one_endpoint(&server);
    listener.register_callback(|_r: &ListenerResult| {
        let l = SLOT.lock().take();
        drop(l);
        DROPPED.store(true, Ordering::SeqCst);
    });
    listener.start().unwrap();
    *SLOT.lock() = Some(listener);
    wait_for("dropped", PATIENCE, || DROPPED.load(Ordering::SeqCst));
    wait_for("threads gone", Duration::from_secs(2), || {
        tasks() <= base + 2
    });
}
