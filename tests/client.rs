//! The client against httpmock and in-test servers: request shapes, errors,
//! and the byte-level framing of the event stream.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use httpmock::prelude::*;
use portainer::{Client, DockerEvent, Error, EventFilters, EventQuery, Timestamp};

use common::fixtures::fixture_lines;
use common::{PATIENCE, TestServer, event_line};

const KEY: &str = "ptr_secret_key_123";

#[test]
fn events_request_has_path_key_nanosecond_since_and_json_filters() {
    let server = MockServer::start();
    let line = event_line("start", "abc", 1_700_000_000_000_000_123);
    let mock = server.mock(|when, then| {
        when.method(GET)
            .path("/portainer/api/endpoints/7/docker/events")
            .header("X-API-Key", KEY)
            .query_param("since", "1700000000.000000123")
            .query_param("until", "1700000100.500000000")
            .query_param("filters", r#"{"event":["start"],"type":["container"]}"#);
        then.status(200)
            .header("content-type", "application/json")
            .body(format!("{line}\n"));
    });
    let client = Client::new(&format!("{}/portainer/", server.base_url()), KEY).unwrap();
    let query = EventQuery::new()
        .since(Timestamp::from_unix_nanos(1_700_000_000_000_000_123))
        .until("1700000100.5".parse::<Timestamp>().unwrap())
        .filters(EventFilters::new().event_type("container").event("start"));
    let events: Vec<DockerEvent> = client
        .events(7, &query)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    mock.assert();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].actor_id(), Some("abc"));
}

#[test]
fn recent_events_sends_until_and_requires_since() {
    let server = MockServer::start();
    let mock = server.mock(|when, then| {
        when.method(GET)
            .path("/api/endpoints/1/docker/events")
            .query_param_exists("until")
            .query_param("since", "5.000000000");
        then.status(200)
            .header("content-type", "application/x-ndjson")
            .body(fixture_lines().join("\n"));
    });
    let client = Client::new(&server.base_url(), KEY).unwrap();
    let window = client
        .recent_events(1, &EventQuery::new().since(Timestamp::from_unix_secs(5)))
        .unwrap();
    mock.assert();
    assert_eq!(window.len(), fixture_lines().len());

    let err = client.recent_events(1, &EventQuery::new()).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
}

#[test]
fn endpoints_are_listed_with_the_key() {
    let server = MockServer::start();
    let mock =
        server.mock(|when, then| {
            when.method(GET)
                .path("/api/endpoints")
                .header("X-API-Key", KEY);
            then.status(200).header("content-type", "application/json").body(
            r#"[{"Id":1,"Name":"local","Type":1,"Status":1,"URL":"unix:///var/run/docker.sock"},
                {"Id":5,"Name":"k8s","Type":5,"Status":2,"URL":""}]"#,
        );
        });
    let endpoints = Client::new(&server.base_url(), KEY)
        .unwrap()
        .endpoints()
        .unwrap();
    mock.assert();
    let ids: Vec<u64> = endpoints.iter().map(|e| e.id).collect();
    assert_eq!(ids, [1, 5]);
    assert!(endpoints[0].has_docker_api() && !endpoints[1].has_docker_api());
}

fn error_for(status: u16, content_type: &str, body: &str) -> Error {
    let server = MockServer::start();
    server.mock(|when, then| {
        when.any_request();
        then.status(status)
            .header("content-type", content_type)
            .body(body);
    });
    let client = Client::new(&server.base_url(), KEY).unwrap();
    let err = client.events(1, &EventQuery::new()).unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(KEY), "the key leaked: {shown}");
    err
}

#[test]
fn statuses_become_errors_with_portainer_messages() {
    let err = error_for(
        401,
        "application/json",
        r#"{"message":"Invalid JWT token","details":"Unauthorized"}"#,
    );
    assert!(
        matches!(&err, Error::Unauthorized { message } if message.contains("Invalid JWT token")),
        "{err:?}"
    );
    assert!(err.is_final());

    let err = error_for(403, "application/json", r#"{"message":"Access denied"}"#);
    assert!(matches!(&err, Error::Forbidden { message } if message == "Access denied"));

    let err = error_for(
        404,
        "application/json",
        r#"{"message":"Unable to find an environment with the specified identifier inside the database"}"#,
    );
    assert!(matches!(&err, Error::NotFound { message } if message.starts_with("Unable to find")));

    let err = error_for(
        502,
        "text/html",
        "<html><head><title>502 Bad Gateway</title></head></html>",
    );
    assert!(
        matches!(&err, Error::Status { status: 502, message } if message.contains("Bad Gateway")),
        "{err:?}"
    );
    assert!(!err.is_final());

    let err = error_for(502, "text/plain", "");
    assert!(matches!(&err, Error::Status { status: 502, message } if message.is_empty()));

    let err = error_for(200, "text/html", "<html><body>Sign in</body></html>");
    assert!(matches!(&err, Error::UnexpectedResponse { .. }), "{err:?}");
}

/// Serves one event stream whose chunks are `chunks`, then ends it.
fn serve_chunks(chunks: Vec<Vec<u8>>) -> TestServer {
    TestServer::start(move |conn| {
        conn.start_chunked("application/json");
        for chunk in &chunks {
            conn.chunk(chunk);
        }
        conn.end_chunked();
    })
}

fn read_all(server: &TestServer) -> Vec<Result<DockerEvent, Error>> {
    let client = Client::new(&server.url(), KEY).unwrap();
    client.events(1, &EventQuery::new()).unwrap().collect()
}

fn actions(items: &[Result<DockerEvent, Error>]) -> Vec<String> {
    items
        .iter()
        .map(|item| match item {
            Ok(event) => event.action().map(str::to_string).unwrap_or_default(),
            Err(err) => format!("error: {err}"),
        })
        .collect()
}

#[test]
fn two_events_in_one_chunk() {
    let both = format!(
        "{}\n{}\n",
        event_line("create", "a", 1),
        event_line("start", "a", 2)
    );
    let server = serve_chunks(vec![both.into_bytes()]);
    assert_eq!(actions(&read_all(&server)), ["create", "start"]);
}

#[test]
fn one_event_over_three_chunks() {
    let line = format!("{}\n", event_line("die", "a", 3)).into_bytes();
    let (a, rest) = line.split_at(10);
    let (b, c) = rest.split_at(rest.len() - 3);
    let server = serve_chunks(vec![a.to_vec(), b.to_vec(), c.to_vec()]);
    assert_eq!(actions(&read_all(&server)), ["die"]);
}

#[test]
fn crlf_and_blank_lines_between_events() {
    let body = format!(
        "{}\r\n\r\n{}\r\n",
        event_line("create", "a", 1),
        event_line("start", "a", 2)
    );
    let server = serve_chunks(vec![body.into_bytes()]);
    let items = read_all(&server);
    assert_eq!(actions(&items), ["create", "start"]);
}

#[test]
fn fixture_in_docker_framing_gives_every_event() {
    // One event per chunk, the newline inside the chunk, as dockerd sends them.
    let lines = fixture_lines();
    let chunks = lines
        .iter()
        .map(|l| format!("{l}\n").into_bytes())
        .collect();
    let server = serve_chunks(chunks);
    let items = read_all(&server);
    assert_eq!(items.len(), lines.len());
    for (item, line) in items.iter().zip(&lines) {
        let expected: DockerEvent = serde_json::from_str(line).unwrap();
        assert_eq!(item.as_ref().unwrap(), &expected);
    }
}

#[test]
fn malformed_and_non_utf8_lines_are_errors_and_the_stream_goes_on() {
    let mut body = format!(
        "{}\n<html><body>502</body></html>\n",
        event_line("create", "a", 1)
    )
    .into_bytes();
    body.extend_from_slice(b"{\"Type\":\"x\",\"Action\":\"\xff\"}\n");
    body.extend_from_slice(format!("{}\n", event_line("start", "a", 2)).as_bytes());
    let server = serve_chunks(vec![body]);
    let items = read_all(&server);
    assert_eq!(items.len(), 4);
    assert!(items[0].is_ok() && items[3].is_ok());
    assert!(
        matches!(&items[1], Err(Error::Decode { excerpt, .. }) if excerpt.starts_with("<html>"))
    );
    assert!(matches!(&items[2], Err(Error::Decode { .. })));
}

#[test]
fn overlong_line_is_reported_and_skipped() {
    let long = format!("{{\"Type\":\"{}\"}}\n", "x".repeat(5000));
    let body = format!("{long}{}\n", event_line("start", "a", 2));
    let server = serve_chunks(vec![body.into_bytes()]);
    let client = Client::builder(&server.url())
        .api_key(KEY)
        .max_line_length(1000)
        .build()
        .unwrap();
    let items: Vec<_> = client.events(1, &EventQuery::new()).unwrap().collect();
    assert!(
        matches!(items[0], Err(Error::LineTooLong { limit: 1000, .. })),
        "{:?}",
        items[0]
    );
    assert_eq!(items[1].as_ref().unwrap().action(), Some("start"));
    assert_eq!(items.len(), 2);
}

#[test]
fn connection_cut_mid_chunk_is_an_error_then_the_end() {
    let server = TestServer::start(|conn| {
        conn.start_chunked("application/json");
        conn.chunk(format!("{}\n", event_line("create", "a", 1)).as_bytes());
        // Announce 200 bytes, send 20, hang up.
        use std::io::Write;
        let _ = conn.stream.write_all(b"c8\r\n{\"Type\":\"container\",");
        let _ = conn.stream.shutdown(std::net::Shutdown::Both);
    });
    let items = read_all(&server);
    assert_eq!(items.len(), 2, "{items:?}");
    assert!(items[0].is_ok());
    assert!(
        items[1].is_err(),
        "the half event must not pass as an event"
    );
}

#[test]
fn canceller_unblocks_a_read_on_an_idle_stream() {
    let server = TestServer::start(|conn| {
        conn.start_chunked("application/json");
        conn.chunk(format!("{}\n", event_line("create", "a", 1)).as_bytes());
        conn.hold();
    });
    let client = Client::new(&server.url(), KEY).unwrap();
    let mut stream = client.events(1, &EventQuery::new()).unwrap();
    assert!(stream.next().unwrap().is_ok());
    let canceller = stream.canceller();
    let reader = thread::spawn(move || {
        let next = stream.next();
        (next.is_none(), stream.next().is_none())
    });
    thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    canceller.cancel();
    let (ended, fused) = reader.join().unwrap();
    assert!(ended && fused);
    assert!(started.elapsed() < PATIENCE);
}

#[test]
fn connection_refused_is_a_connection_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let client = Client::new(&format!("http://127.0.0.1:{port}"), KEY).unwrap();
    let err = client.endpoints().unwrap_err();
    assert!(matches!(err, Error::Connection { .. }), "{err:?}");
    assert!(!err.is_final());
}

/// A Portainer whose endpoint list is empty, and a forward proxy.
fn portainer_and_proxy() -> (TestServer, TestServer) {
    let portainer = TestServer::start(|conn| conn.respond(200, "application/json", "[]"));
    let proxy = TestServer::start(|conn| conn.tunnel());
    (portainer, proxy)
}

#[test]
fn a_builder_proxy_is_used_through_connect() {
    let (portainer, proxy) = portainer_and_proxy();
    let client = Client::builder(&portainer.url())
        .api_key(KEY)
        .proxy(proxy.url())
        .build()
        .unwrap();
    assert!(client.endpoints().unwrap().is_empty());
    let tunnels = proxy.requests();
    assert_eq!(tunnels.len(), 1, "{tunnels:?}");
    assert_eq!(tunnels[0].method, "CONNECT");
    assert_eq!(
        tunnels[0].target,
        portainer.url().trim_start_matches("http://")
    );
    let requests = portainer.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path(), "/api/endpoints");
    assert_eq!(requests[0].header("X-API-Key"), Some(KEY));
}

#[test]
fn a_bypassed_host_and_without_proxy_go_direct() {
    let (portainer, proxy) = portainer_and_proxy();
    let bypassed = Client::builder(&portainer.url())
        .api_key(KEY)
        .proxy(proxy.url())
        .proxy_bypass("example.com, 127.0.0.1")
        .build()
        .unwrap();
    bypassed.endpoints().unwrap();
    let direct = Client::builder(&portainer.url())
        .api_key(KEY)
        .proxy(proxy.url())
        .without_proxy()
        .build()
        .unwrap();
    direct.endpoints().unwrap();
    assert_eq!(portainer.requests().len(), 2);
    assert!(proxy.requests().is_empty(), "{:?}", proxy.requests());
}

#[test]
fn a_proxy_that_refuses_the_tunnel_is_a_connection_error() {
    let portainer = TestServer::start(|conn| conn.respond(200, "application/json", "[]"));
    let proxy = TestServer::start(|conn| {
        conn.respond(403, "text/plain", "tunnels to this port are not allowed")
    });
    let client = Client::builder(&portainer.url())
        .api_key(KEY)
        .proxy(format!(
            "http://user:proxy-secret@{}",
            proxy.url().trim_start_matches("http://")
        ))
        .build()
        .unwrap();
    assert!(!format!("{client:?}").contains("proxy-secret"));
    let err = client.endpoints().unwrap_err();
    assert!(matches!(err, Error::Connection { .. }), "{err:?}");
    assert!(err.to_string().contains("403"), "{err}");
    assert!(!err.to_string().contains("proxy-secret"), "{err}");
    assert!(portainer.requests().is_empty());
}

#[test]
fn login_sends_json_then_only_the_bearer_token() {
    let server = TestServer::start(|conn| match conn.request.path() {
        "/api/auth" => conn.respond(200, "application/json", r#"{"jwt":"tok-123"}"#),
        _ => conn.respond(200, "application/json", "[]"),
    });
    let client = Client::builder(&server.url())
        .login("admin", "pw")
        .build()
        .unwrap();
    client.endpoints().unwrap();
    client.endpoints().unwrap();
    let requests = server.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path()).collect();
    assert_eq!(paths, ["/api/auth", "/api/endpoints", "/api/endpoints"]);
    assert_eq!(requests[0].method, "POST");
    let body: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"username": "admin", "password": "pw"})
    );
    for request in &requests[1..] {
        assert_eq!(request.header("Authorization"), Some("Bearer tok-123"));
        assert_eq!(request.header("X-API-Key"), None);
    }
}

#[test]
fn refused_credentials_are_unauthorized_and_a_key_with_a_login_is_refused() {
    let server = TestServer::start(|conn| {
        conn.respond(
            422,
            "application/json",
            r#"{"message":"Invalid credentials"}"#,
        )
    });
    let client = Client::builder(&server.url())
        .login("admin", "not-the-password")
        .build()
        .unwrap();
    let err = client.endpoints().unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("not-the-password"));
    assert_eq!(server.requests().len(), 1, "no request without a token");

    let both = Client::builder(&server.url())
        .api_key(KEY)
        .login("admin", "pw")
        .build();
    assert!(matches!(both, Err(Error::Config(_))), "{both:?}");
}
