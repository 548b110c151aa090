//! The crate on a Docker Engine reached directly, without Portainer: its
//! unix socket, TCP, and TLS with a client certificate (`scripts/dev-env.sh`
//! serves the same daemon all three ways). Skipped with a message when no
//! daemon is configured, except on CI.

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use portainer::{
    Client, DockerEvent, ENGINE_ENDPOINT_ID, EndpointType, Error, EventQuery, Listener, StreamState,
};

use common::docker::{DockerEnv, assert_lifecycle, await_lifecycle, docker_env, unique_name};
use common::{PATIENCE, stop_promptly, wait_for};

#[test]
fn listener_on_the_unix_socket_sees_a_lifecycle_and_stops_promptly() {
    let Some(env) = docker_env() else { return };
    let client = Client::docker_builder(&env.docker_host).build().unwrap();
    assert!(client.is_docker_engine());
    assert_eq!(client.url(), env.docker_host);
    let listener = Listener::builder(client)
        .reconnect_interval(Duration::from_millis(200))
        .build();
    let rx = listener.subscribe();
    listener.start().unwrap();
    let ids: Vec<u64> = listener.status().iter().map(|s| s.endpoint_id).collect();
    assert_eq!(ids, [ENGINE_ENDPOINT_ID]);
    wait_for("the engine's stream", PATIENCE, || {
        listener.status()[0].state == StreamState::Streaming
    });

    let name = unique_name("unix");
    env.run_container(&name);
    let by_endpoint = await_lifecycle(&rx, &name, &[ENGINE_ENDPOINT_ID]);
    assert_lifecycle(&by_endpoint[&ENGINE_ENDPOINT_ID], &name);

    // The stream is idle now, blocked in a read on the unix socket.
    stop_promptly(&listener);
    assert_eq!(listener.status()[0].state, StreamState::Stopped);
}

/// A past window holding one container's run, and the container's name.
fn past_window(env: &DockerEnv, test: &str) -> (EventQuery, String) {
    let (since, until, name) = env.past_window(test);
    (EventQuery::new().since(since).until(until), name)
}

/// The events of container `name` in the window.
fn events_of(client: &Client, query: &EventQuery, name: &str) -> Vec<DockerEvent> {
    let mut events = client.recent_events(ENGINE_ENDPOINT_ID, query).unwrap();
    events.retain(|e| e.attribute("name") == Some(name));
    events
}

#[test]
fn a_tcp_docker_host_lists_one_endpoint_and_serves_its_events() {
    let Some(env) = docker_env() else { return };
    let client = Client::docker_builder(&env.docker_tcp).build().unwrap();
    let endpoints = client.endpoints().unwrap();
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0].id, ENGINE_ENDPOINT_ID);
    assert_eq!(endpoints[0].kind, EndpointType::Docker);
    assert_eq!(endpoints[0].url, env.docker_tcp);

    let (query, name) = past_window(&env, "tcp");
    assert_lifecycle(&events_of(&client, &query, &name), &name);

    let err = client.events(1, &EventQuery::new()).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
}

#[test]
fn docker_tls_verify_presents_the_client_certificate() {
    let Some(env) = docker_env() else { return };
    let client = Client::docker_builder(&env.docker_tls_host)
        .docker_tls_verify(&env.docker_cert_path)
        .build()
        .unwrap();
    let (query, name) = past_window(&env, "tls");
    assert_lifecycle(&events_of(&client, &query, &name), &name);

    // The same folder without cert.pem and key.pem: the daemon's front
    // wants a client certificate and refuses.
    let only_ca = std::env::temp_dir().join(unique_name("only-ca"));
    fs::create_dir(&only_ca).unwrap();
    fs::copy(
        Path::new(&env.docker_cert_path).join("ca.pem"),
        only_ca.join("ca.pem"),
    )
    .unwrap();
    let without_cert = Client::docker_builder(&env.docker_tls_host)
        .docker_tls_verify(&only_ca)
        .build();
    fs::remove_dir_all(&only_ca).unwrap();
    let err = without_cert.unwrap().endpoints().unwrap_err();
    assert_eq!(err.status(), Some(400), "{err:?}");
}

#[test]
fn engine_clients_refuse_portainer_credentials_and_tls_on_a_socket() {
    let socket = "unix:///var/run/docker.sock";
    let with_key = Client::docker_builder(socket).api_key("ptr_x").build();
    assert!(matches!(with_key, Err(Error::Config(_))), "{with_key:?}");
    let tls_on_socket = Client::docker_builder(socket).ca_file("ca.pem").build();
    assert!(
        matches!(tls_on_socket, Err(Error::Config(_))),
        "{tls_on_socket:?}"
    );
    let unsupported = Client::docker_builder("ssh://me@host").build();
    assert!(
        matches!(unsupported, Err(Error::InvalidUrl { .. })),
        "{unsupported:?}"
    );
}
