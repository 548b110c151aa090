//! The batched hand-off from readers to the dispatcher, under input meant
//! to break it: each test failed before the fix it guards.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use portainer::{Client, Listener, StreamState};

use common::{PATIENCE, TestServer, event_line, portainer, stop_promptly};

const KEY: &str = "ptr_handoff_key";
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

/// An event read just as its endpoint is removed was never checked against
/// the events already delivered: a replay read at that moment went out a
/// second time.
#[test]
fn a_replay_read_as_its_endpoint_is_removed_is_not_delivered_again() {
    const BOTH: &str = r#"[{"Id":1,"Name":"a","Type":1},{"Id":2,"Name":"b","Type":1}]"#;
    const ONLY_2: &str = r#"[{"Id":2,"Name":"b","Type":1}]"#;
    let endpoints = Arc::new(Mutex::new(BOTH));
    let (mark, marked) = crossbeam_channel::bounded::<()>(1);
    let server = {
        let endpoints = endpoints.clone();
        TestServer::start(move |conn| {
            let path = conn.request.path().to_string();
            if path == "/api/endpoints" {
                let body = *endpoints.lock();
                conn.respond(200, "application/json", body);
                return;
            }
            conn.start_chunked("application/json");
            if path.starts_with("/api/endpoints/2/") {
                if marked.recv_timeout(PATIENCE).is_ok() {
                    conn.chunk(format!("{}\n", event_line("start", "marker", T0 + 1)).as_bytes());
                }
                conn.hold();
            } else if conn.request.query("since").is_none() {
                // The first stream: one event, then the end of the body.
                conn.chunk(format!("{}\n", event_line("start", "a", T0)).as_bytes());
                conn.end_chunked();
            } else {
                // The resumed stream replays that event, over and over,
                // while the endpoint disappears from the list.
                *endpoints.lock() = ONLY_2;
                let replay = format!("{}\n", event_line("start", "a", T0)).repeat(256);
                while conn.stream.take_error().ok().flatten().is_none() {
                    let mut chunk = format!("{:x}\r\n", replay.len()).into_bytes();
                    chunk.extend_from_slice(replay.as_bytes());
                    chunk.extend_from_slice(b"\r\n");
                    if conn.stream.write_all(&chunk).is_err() {
                        return;
                    }
                }
            }
        })
    };
    let listener = Listener::builder(Client::new(&server.url(), KEY).unwrap())
        .reconnect_interval(Duration::from_millis(50))
        .endpoint_refresh(Some(Duration::from_millis(50)))
        .build();
    let events = listener.subscribe();
    let states = listener.subscribe_status();
    listener.start().unwrap();
    loop {
        let status = states
            .recv_timeout(PATIENCE)
            .expect("endpoint 1 to be removed");
        if status.endpoint_id == 1 && status.state == StreamState::Stopped {
            break;
        }
    }
    // Endpoint 1's reader has handed over all it will; an event of endpoint
    // 2 queued after that shows when the dispatcher has delivered it all.
    mark.send(()).unwrap();
    let mut actors = Vec::new();
    loop {
        let result = events
            .recv_timeout(PATIENCE)
            .expect("the marker event of endpoint 2");
        let actor = result.event.actor_id().unwrap_or_default().to_string();
        if actor == "marker" {
            break;
        }
        actors.push((result.endpoint_id, actor));
    }
    stop_promptly(&listener);
    assert_eq!(actors, [(1, "a".to_string())], "delivered once, not again");
}

/// A tiny self-describing format whose maps may state any length up front,
/// as binary formats (MessagePack, CBOR) do from their input.
mod stated_length {
    use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
    use serde::forward_to_deserialize_any;

    pub enum Node {
        Str(&'static str),
        /// Entries, and the length the input claims.
        Map(Vec<(&'static str, Node)>, usize),
    }

    struct Entries<'a> {
        entries: std::slice::Iter<'a, (&'static str, Node)>,
        value: Option<&'a Node>,
        stated: usize,
    }

    impl<'de, 'a> MapAccess<'de> for Entries<'a> {
        type Error = de::value::Error;

        fn next_key_seed<K: DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, Self::Error> {
            match self.entries.next() {
                Some((key, value)) => {
                    self.value = Some(value);
                    seed.deserialize(&Node::Str(key)).map(Some)
                }
                None => Ok(None),
            }
        }

        fn next_value_seed<V: DeserializeSeed<'de>>(
            &mut self,
            seed: V,
        ) -> Result<V::Value, Self::Error> {
            seed.deserialize(self.value.take().unwrap())
        }

        fn size_hint(&self) -> Option<usize> {
            Some(self.stated)
        }
    }

    impl<'de> Deserializer<'de> for &Node {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            match self {
                Node::Str(text) => visitor.visit_str(text),
                Node::Map(entries, stated) => visitor.visit_map(Entries {
                    entries: entries.iter(),
                    value: None,
                    stated: *stated,
                }),
            }
        }

        fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            visitor.visit_some(self)
        }

        forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf unit unit_struct newtype_struct seq tuple
            tuple_struct map struct enum identifier ignored_any
        }
    }
}

/// A map's stated length comes from the input: it must not size an
/// allocation, or a few bytes claiming a huge map panic (capacity overflow)
/// or abort the process (allocation failure).
#[test]
fn a_huge_stated_attribute_count_is_not_trusted() {
    use serde::Deserialize;
    use stated_length::Node;

    let input = Node::Map(
        vec![
            ("Type", Node::Str("container")),
            (
                "Actor",
                Node::Map(
                    vec![(
                        "Attributes",
                        Node::Map(vec![("name", Node::Str("web"))], usize::MAX),
                    )],
                    1,
                ),
            ),
        ],
        2,
    );
    let event = std::panic::catch_unwind(|| portainer::DockerEvent::deserialize(&input))
        .expect("deserialising panicked")
        .unwrap();
    assert_eq!(event.attribute("name"), Some("web"));
}
