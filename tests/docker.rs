//! The crate against a real Docker Engine behind an nginx front laid out
//! like Portainer (`scripts/dev-env.sh` starts both). Skipped with a message
//! when no daemon is configured, except on CI.

mod common;

use std::time::{Duration, Instant};

use portainer::{Client, DockerEvent, Error, EventFilters, EventQuery, Listener, StreamState};

use common::docker::{assert_lifecycle, await_lifecycle, docker_env, unique_name};
use common::{PATIENCE, TestServer, wait_for};

#[test]
fn listener_on_every_endpoint_sees_a_container_lifecycle() {
    let Some(env) = docker_env() else { return };
    let client = Client::new(&env.url, &env.api_key).unwrap();
    let listener = Listener::builder(client)
        .reconnect_interval(Duration::from_millis(200))
        .build();
    let rx = listener.subscribe();
    listener.start().unwrap();

    let ids: Vec<u64> = listener.status().iter().map(|s| s.endpoint_id).collect();
    assert_eq!(ids, [1, 2, 3], "endpoint 5 (Kubernetes) must be skipped");
    wait_for("endpoints 1 and 2 to stream", PATIENCE, || {
        listener.status()[..2]
            .iter()
            .all(|s| s.state == StreamState::Streaming)
    });

    let name = unique_name("lifecycle");
    env.run_container(&name);

    let by_endpoint = await_lifecycle(&rx, &name, &[1, 2]);
    assert_lifecycle(&by_endpoint[&1], &name);
    assert_lifecycle(&by_endpoint[&2], &name);
    assert!(!by_endpoint.contains_key(&3));

    // Endpoint 3's socket does not exist: nginx answers 502 and the reader
    // keeps trying without holding up the others.
    wait_for("endpoint 3 to retry", PATIENCE, || {
        listener.status()[2].reconnects >= 2
    });
    let status = listener.status();
    assert!(
        !status[2].state.is_ended() && status[2].events_delivered == 0,
        "{:?}",
        status[2]
    );
    assert_eq!(status[0].state, StreamState::Streaming);
    assert_eq!(status[1].state, StreamState::Streaming);

    let started = Instant::now();
    listener.stop();
    assert!(started.elapsed() < PATIENCE);
}

#[test]
fn a_bad_key_yields_no_events_and_one_logged_error() {
    let Some(env) = docker_env() else { return };
    common::capture_logs();
    let wrong_key = "ptr_definitely_wrong_key";
    let client = Client::new(&env.url, wrong_key).unwrap();

    // Every endpoint: the endpoint list itself is refused.
    let every = Listener::builder(client.clone()).build();
    let err = every.start().unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");

    // One endpoint: its reader ends for good with the 401.
    let one = Listener::builder(client)
        .endpoint(1)
        .reconnect_interval(Duration::from_millis(50))
        .build();
    let rx = one.subscribe();
    one.start().unwrap();
    wait_for("the reader to give up", PATIENCE, || {
        one.status()[0].state.is_ended()
    });
    assert!(
        matches!(
            one.status()[0].state,
            StreamState::Failed {
                status: Some(401),
                ..
            }
        ),
        "{:?}",
        one.status()
    );
    assert!(rx.recv_timeout(PATIENCE).is_err(), "no event may arrive");
    assert_eq!(one.status()[0].reconnects, 0);
    let errors = common::logged("endpoint 1: giving up");
    assert!(
        errors
            .iter()
            .any(|l| l.starts_with("ERROR") && l.contains("401")),
        "{errors:?}"
    );
    assert!(common::all_logs().iter().all(|l| !l.contains(wrong_key)));
}

#[test]
fn recent_events_match_the_docker_cli_for_the_same_window() {
    let Some(env) = docker_env() else { return };
    let client = Client::new(&env.url, &env.api_key).unwrap();
    let (since, until, name) = env.past_window("window");

    let ours = client
        .recent_events(1, &EventQuery::new().since(since).until(until))
        .unwrap();
    let cli: Vec<DockerEvent> = env.daemon_record(since, until);
    assert!(
        ours.iter()
            .any(|e| e.attribute("name") == Some(name.as_str())),
        "the window holds the test's container"
    );
    assert_eq!(ours, cli);
}

#[test]
fn events_with_type_and_action_filters_yield_only_matches() {
    let Some(env) = docker_env() else { return };
    let client = Client::new(&env.url, &env.api_key).unwrap();
    let (since, until, name) = env.past_window("filters");
    let query = EventQuery::new().since(since).until(until).filters(
        EventFilters::new()
            .event_type("container")
            .event("start")
            .event("die"),
    );
    let events: Vec<DockerEvent> = client
        .events(2, &query)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(!events.is_empty());
    for event in &events {
        assert_eq!(event.kind(), Some("container"));
        assert!(matches!(event.action(), Some("start" | "die")), "{event:?}");
    }
    let ours: Vec<&str> = events
        .iter()
        .filter(|e| e.attribute("name") == Some(name.as_str()))
        .filter_map(|e| e.action())
        .collect();
    assert_eq!(ours, ["start", "die"]);
}

/// A listener on endpoint 1 of `client`, streaming before it returns.
fn streaming_listener(client: Client) -> Listener {
    let listener = Listener::builder(client)
        .endpoint(1)
        .reconnect_interval(Duration::from_millis(200))
        .build();
    listener.start().unwrap();
    wait_for("endpoint 1 to stream", PATIENCE, || {
        listener.status()[0].state == StreamState::Streaming
    });
    listener
}

#[test]
fn https_with_the_ca_file_follows_a_container_lifecycle() {
    let Some(env) = docker_env() else { return };
    let client = Client::builder(&env.tls_url)
        .api_key(&env.api_key)
        .ca_file(&env.ca_file)
        .build()
        .unwrap();
    let listener = streaming_listener(client);
    let rx = listener.subscribe();
    let name = unique_name("https");
    env.run_container(&name);
    let by_endpoint = await_lifecycle(&rx, &name, &[1]);
    assert_lifecycle(&by_endpoint[&1], &name);
    listener.stop();
}

#[test]
fn https_without_the_ca_is_refused_as_a_tls_error() {
    let Some(env) = docker_env() else { return };
    let client = Client::new(&env.tls_url, &env.api_key).unwrap();
    let err = client.endpoints().unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("certificate"), "{message}");

    let listener = Listener::builder(client).build();
    let err = listener.start().unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
}

#[test]
fn https_with_the_explicit_opt_in_accepts_the_untrusted_certificate() {
    let Some(env) = docker_env() else { return };
    let client = Client::builder(&env.tls_url)
        .api_key(&env.api_key)
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    assert_eq!(client.endpoints().unwrap().len(), 4);
    let listener = streaming_listener(client);
    listener.stop();
}

#[test]
fn https_goes_through_a_connect_proxy() {
    let Some(env) = docker_env() else { return };
    let proxy = TestServer::start(|conn| conn.tunnel());
    let client = Client::builder(&env.tls_url)
        .api_key(&env.api_key)
        .ca_file(&env.ca_file)
        .proxy(proxy.url())
        .build()
        .unwrap();
    assert_eq!(client.endpoints().unwrap().len(), 4);
    let (since, until, name) = env.past_window("proxied");
    let events = client
        .recent_events(1, &EventQuery::new().since(since).until(until))
        .unwrap();
    assert!(events.iter().any(|e| e.attribute("name") == Some(&name)));

    let tunnels = proxy.requests();
    let target = env.tls_url.trim_start_matches("https://");
    assert_eq!(tunnels.len(), 2, "one for the list, one for the stream");
    assert!(
        tunnels
            .iter()
            .all(|t| t.method == "CONNECT" && t.target == target),
        "{tunnels:?}"
    );
}
