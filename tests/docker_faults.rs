//! The listener on the real daemon while its front and the daemon itself
//! restart. These tests stop shared services, so they live in a test binary
//! of their own (cargo runs test binaries one after another) and take turns.

mod common;

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use portainer::{Client, DockerEvent, Listener, ListenerResult, StreamState, Timestamp};

use common::docker::{DockerEnv, docker_env, unique_name};
use common::{PATIENCE, wait_for};

/// One test at a time: both stop services the other needs.
static SERIAL: Mutex<()> = Mutex::new(());

fn env_path(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is set by scripts/dev-env.sh"))
}

fn read_pid(file: &str) -> u32 {
    std::fs::read_to_string(file)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Gone, or a zombie waiting to be reaped: either way no longer serving.
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

fn terminate(pid: u32) {
    let status = Command::new("kill").arg(pid.to_string()).status().unwrap();
    assert!(status.success());
    wait_for("the process to exit", Duration::from_secs(30), || {
        process_gone(pid)
    });
}

fn front_port(env: &DockerEnv) -> u16 {
    env.url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

fn front_answers(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn stop_front(env: &DockerEnv) {
    terminate(read_pid(&env_path("PORTAINER_TEST_NGINX_PID_FILE")));
    let port = front_port(env);
    wait_for("the front to refuse connections", PATIENCE, || {
        !front_answers(port)
    });
}

fn start_front(env: &DockerEnv) {
    let status = Command::new("nginx")
        .args(["-c", &env_path("PORTAINER_TEST_NGINX_CONF")])
        .status()
        .unwrap();
    assert!(status.success(), "nginx did not start");
    let port = front_port(env);
    wait_for("the front to answer", PATIENCE, || front_answers(port));
}

/// The events each endpoint delivered, by endpoint.
fn by_endpoint(results: &[ListenerResult]) -> BTreeMap<u64, Vec<DockerEvent>> {
    let mut map: BTreeMap<u64, Vec<DockerEvent>> = BTreeMap::new();
    for result in results {
        map.entry(result.endpoint_id)
            .or_default()
            .push(DockerEvent::clone(&result.event));
    }
    map
}

fn destroyed(events: &[DockerEvent], name: &str) -> bool {
    events
        .iter()
        .any(|e| e.attribute("name") == Some(name) && e.action() == Some("destroy"))
}

#[test]
fn front_restarts_lose_and_repeat_nothing() {
    let Some(env) = docker_env() else { return };
    let _turn = SERIAL.lock();
    let since = Timestamp::now();
    let listener = Listener::builder(Client::new(&env.url, &env.api_key).unwrap())
        .since(since)
        .reconnect_interval(Duration::from_millis(200))
        .endpoint_refresh(None)
        .build();
    let rx = listener.subscribe();
    listener.start().unwrap();
    wait_for("endpoints 1 and 2 to stream", PATIENCE, || {
        listener.status()[..2]
            .iter()
            .all(|s| s.state == StreamState::Streaming)
    });

    for round in 0..3 {
        env.run_container(&unique_name(&format!("up{round}")));
        stop_front(&env);
        // Events while the front is down are replayed after it returns.
        env.run_container(&unique_name(&format!("down{round}")));
        start_front(&env);
    }
    let last = unique_name("last");
    env.run_container(&last);
    thread::sleep(Duration::from_millis(20));
    let until = Timestamp::now();

    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let map = by_endpoint(&seen);
        if [1, 2]
            .iter()
            .all(|id| map.get(id).is_some_and(|e| destroyed(e, &last)))
        {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        seen.push(
            rx.recv_timeout(left)
                .expect("the last container's events on 1 and 2"),
        );
    }
    listener.stop();

    let record: Vec<DockerEvent> = env.daemon_record(since, until);
    assert!(record.len() >= 28, "7 containers' events: {}", record.len());
    let map = by_endpoint(&seen);
    for id in [1, 2] {
        let delivered: Vec<&DockerEvent> = map[&id]
            .iter()
            .filter(|e| e.timestamp_nanos().unwrap() <= until.unix_nanos())
            .collect();
        let expected: Vec<&DockerEvent> = record.iter().collect();
        assert_eq!(
            delivered, expected,
            "endpoint {id} differs from the daemon's record"
        );
    }
}

#[test]
fn the_listener_recovers_when_the_daemon_restarts() {
    let Some(env) = docker_env() else { return };
    let _turn = SERIAL.lock();
    let listener = Listener::builder(Client::new(&env.url, &env.api_key).unwrap())
        .endpoint(1)
        .reconnect_interval(Duration::from_millis(200))
        .build();
    let rx = listener.subscribe();
    let states = listener.subscribe_status();
    listener.start().unwrap();
    wait_for("the stream", PATIENCE, || {
        listener.status()[0].state == StreamState::Streaming
    });
    let before = unique_name("before-restart");
    env.run_container(&before);

    terminate(read_pid(&env_path("PORTAINER_TEST_DOCKERD_PID_FILE")));
    // The daemon comes back as the environment started it; the
    // environment's teardown stops it by its pid file as before.
    let args: Vec<String> = std::fs::read_to_string(env_path("PORTAINER_TEST_DOCKERD_ARGS_FILE"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(std::env::temp_dir().join("portainer-test-dockerd-restart.log"))
        .unwrap();
    // `setsid --fork` detaches it from the test, as the environment did.
    let status = Command::new("setsid")
        .arg("--fork")
        .arg("dockerd")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .status()
        .unwrap();
    assert!(status.success(), "dockerd did not start");
    wait_for(
        "the daemon to answer again",
        Duration::from_secs(60),
        || {
            Command::new("docker")
                .args(["-H", &env.docker_host, "version"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        },
    );

    let after = unique_name("after-restart");
    wait_for("the stream to come back", Duration::from_secs(60), || {
        listener.status()[0].state == StreamState::Streaming
    });
    env.run_container(&after);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !destroyed(&seen, &after) {
        let left = deadline.saturating_duration_since(Instant::now());
        seen.push(DockerEvent::clone(
            &rx.recv_timeout(left)
                .expect("events after the restart")
                .event,
        ));
    }
    assert!(destroyed(&seen, &before));
    let status = listener.status();
    assert!(status[0].reconnects >= 1, "{status:?}");
    assert!(
        states
            .try_iter()
            .any(|s| matches!(s.state, StreamState::Waiting { .. })),
        "the gap was not announced to status subscribers"
    );
    listener.stop();
}
