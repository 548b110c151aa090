//! Tests written to break the batched hand-off from readers to the
//! dispatcher: each failed before its fix.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use portainer::{Client, Listener};

use common::{PATIENCE, TestServer, event_line, portainer, stop_promptly};

const KEY: &str = "ptr_break_handoff_key";
const T0: i64 = 1_700_000_000_000_000_000;

/// A listener on endpoint 1 of `server`.
fn one_endpoint(server: &TestServer) -> Listener {
    Listener::builder(Client::new(&server.url(), KEY).unwrap())
        .endpoint(1)
        .reconnect_interval(Duration::from_millis(50))
        .build()
}

/// A stream that sends one event and then, without a pause, `filler` over
/// and over until `done` is set: bytes keep arriving, but no further event.
fn event_then_flood(filler: &'static [u8], done: Arc<AtomicBool>) -> TestServer {
    portainer("[]", move |conn| {
        let block = filler.repeat((256 * 1024) / filler.len());
        // The event and the start of the flood arrive together, so the
        // socket is never empty after the event.
        let mut first = format!("{}\n", event_line("start", "a", T0)).into_bytes();
        first.extend_from_slice(&block);
        conn.start_chunked("application/json");
        conn.chunk(&first);
        while !done.load(Ordering::SeqCst) {
            conn.chunk(&block);
            if conn.stream.take_error().ok().flatten().is_some() {
                return;
            }
        }
        conn.end_chunked();
        conn.hold();
    })
}

fn first_event_arrives_during(filler: &'static [u8]) {
    let done = Arc::new(AtomicBool::new(false));
    let server = event_then_flood(filler, done.clone());
    let listener = one_endpoint(&server);
    let events = listener.subscribe();
    listener.start().unwrap();
    let first = events.recv_timeout(PATIENCE);
    done.store(true, Ordering::SeqCst);
    stop_promptly(&listener);
    let first = first.expect("the event before the flood was held back while bytes kept coming");
    assert_eq!(first.event.actor_id(), Some("a"));
}

/// Malformed lines are skipped, not events: they must not hold back the
/// event parsed before them for as long as they keep coming.
#[test]
fn a_flood_of_malformed_lines_does_not_hold_back_the_event_before_it() {
    first_event_arrives_during(b"<html>not an event</html>\n");
}

/// The same for one line that never ends: the reader discards it as it
/// comes, and the event before it must still go out. (Discarding is about as
/// fast as writing, so before the fix this failed only in some runs.)
#[test]
fn a_never_ending_line_does_not_hold_back_the_event_before_it() {
    first_event_arrives_during(b"x");
}
