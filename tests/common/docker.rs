//! Access to the real Docker daemon and nginx front that `scripts/dev-env.sh`
//! starts, described by environment variables.

use std::collections::BTreeMap;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Receiver;
use portainer::{DockerEvent, ListenerResult, Timestamp};

/// Where the test environment is.
#[derive(Debug, Clone)]
pub struct DockerEnv {
    /// The nginx front that stands in for Portainer.
    pub url: String,
    pub api_key: String,
    /// The same front over TLS, and the CA (PEM file) that signed its certificate.
    pub tls_url: String,
    pub ca_file: String,
    /// The daemon's own socket, for the docker CLI.
    pub docker_host: String,
    /// The same daemon over TCP (`tcp://127.0.0.1:PORT`).
    pub docker_tcp: String,
    /// The same daemon over TLS with client certificates, and the folder of
    /// `ca.pem`, `cert.pem` and `key.pem` for it.
    pub docker_tls_host: String,
    pub docker_cert_path: String,
    /// A small image that has `sh`.
    pub image: String,
}

/// The environment, or `None` (with a message) when none is configured. On
/// CI a missing environment is a failure, never a skip.
pub fn docker_env() -> Option<DockerEnv> {
    let get = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let found = (|| {
        Some(DockerEnv {
            url: get("PORTAINER_TEST_URL")?,
            api_key: get("PORTAINER_TEST_API_KEY")?,
            tls_url: get("PORTAINER_TEST_TLS_URL")?,
            ca_file: get("PORTAINER_TEST_CA_FILE")?,
            docker_host: get("PORTAINER_TEST_DOCKER_HOST")?,
            docker_tcp: get("PORTAINER_TEST_DOCKER_TCP")?,
            docker_tls_host: get("PORTAINER_TEST_DOCKER_TLS_HOST")?,
            docker_cert_path: get("PORTAINER_TEST_DOCKER_CERT_PATH")?,
            image: get("PORTAINER_TEST_IMAGE")?,
        })
    })();
    match found {
        Some(env) => Some(env),
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the tests through scripts/dev-env.sh, which configures a Docker daemon"
            );
            eprintln!(
                "skipping: no Docker daemon configured (run the tests as `scripts/dev-env.sh cargo test`)"
            );
            None
        }
    }
}

impl DockerEnv {
    /// Runs the docker CLI against the test daemon; panics with its output
    /// when it fails.
    pub fn docker(&self, args: &[&str]) -> String {
        let output = Command::new("docker")
            .arg("-H")
            .arg(&self.docker_host)
            .args(args)
            .output()
            .expect("the docker CLI runs");
        assert!(
            output.status.success() || args[0] == "run",
            "docker {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs a container and returns a window around it that is already
    /// over, and the container's name.
    pub fn past_window(&self, test: &str) -> (Timestamp, Timestamp, String) {
        let since = Timestamp::now();
        let name = unique_name(test);
        self.run_container(&name);
        // The daemon stamps events with its own clock, the same as ours here.
        thread::sleep(Duration::from_millis(20));
        (since, Timestamp::now(), name)
    }

    /// The daemon's own record of a window, from the docker CLI.
    pub fn daemon_record(
        &self,
        since: portainer::Timestamp,
        until: portainer::Timestamp,
    ) -> Vec<portainer::DockerEvent> {
        self.docker(&[
            "events",
            "--since",
            &since.to_string(),
            "--until",
            &until.to_string(),
            "--format",
            "{{json .}}",
        ])
        .lines()
        .map(|line| portainer::DockerEvent::from_json(line.as_bytes()).unwrap())
        .collect()
    }

    /// Runs a container named `name` that exits with status 3, then removes
    /// it: create, start, die and destroy events.
    pub fn run_container(&self, name: &str) {
        self.docker(&[
            "run",
            "--name",
            name,
            "--network",
            "none",
            &self.image,
            "sh",
            "-c",
            "exit 3",
        ]);
        self.docker(&["rm", name]);
    }
}

/// A container name unique to this test run.
pub fn unique_name(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("pt-{test}-{}-{nanos}", std::process::id())
}

/// The events of container `name` per endpoint, in arrival order.
pub fn lifecycle_by_endpoint(
    events: &[ListenerResult],
    name: &str,
) -> BTreeMap<u64, Vec<DockerEvent>> {
    let mut by_endpoint: BTreeMap<u64, Vec<DockerEvent>> = BTreeMap::new();
    for result in events {
        if result.event.kind() == Some("container") && result.event.attribute("name") == Some(name)
        {
            by_endpoint
                .entry(result.endpoint_id)
                .or_default()
                .push(DockerEvent::clone(&result.event));
        }
    }
    by_endpoint
}

/// Receives until container `name` has been destroyed on each of
/// `endpoints`, within 30 s; returns its events per endpoint.
pub fn await_lifecycle(
    events: &Receiver<ListenerResult>,
    name: &str,
    endpoints: &[u64],
) -> BTreeMap<u64, Vec<DockerEvent>> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let by_endpoint = lifecycle_by_endpoint(&seen, name);
        let destroyed = |id: &u64| {
            by_endpoint
                .get(id)
                .is_some_and(|events| events.iter().any(|e| e.action() == Some("destroy")))
        };
        if endpoints.iter().all(destroyed) {
            return by_endpoint;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(result) => seen.push(result),
            Err(err) => panic!(
                "waiting for {name}'s events from endpoints {endpoints:?}: {err}; got {by_endpoint:?}"
            ),
        }
    }
}

/// Checks that `events` hold create, start, die (exit code 3) and destroy,
/// in that order.
pub fn assert_lifecycle(events: &[DockerEvent], name: &str) {
    let actions: Vec<&str> = events.iter().filter_map(|e| e.action()).collect();
    let position = |action: &str| {
        actions
            .iter()
            .position(|a| *a == action)
            .unwrap_or_else(|| panic!("no {action} for {name} in {actions:?}"))
    };
    let order = ["create", "start", "die", "destroy"].map(position);
    assert!(order.is_sorted(), "out of order for {name}: {actions:?}");
    let die = &events[order[2]];
    assert_eq!(die.attribute("exitCode"), Some("3"));
}
