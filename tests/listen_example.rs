//! The `listen` example (the main job) against the real daemon.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use portainer::Timestamp;
use serde_json::Value;

use common::PATIENCE;
use common::docker::{DockerEnv, docker_env, unique_name};

/// The example binary `cargo test` builds next to the test binaries.
fn listen_binary() -> PathBuf {
    let mut path = std::env::current_exe().unwrap();
    path.pop();
    if path.ends_with("deps") {
        path.pop();
    }
    path.push("examples");
    path.push("listen");
    assert!(
        path.exists(),
        "{} is missing: run through `cargo test`",
        path.display()
    );
    path
}

/// The lines `output` writes, on a channel that disconnects at its end.
/// Reading goes on when nobody receives, so the writer never blocks or
/// gets a broken pipe.
fn lines_of(output: impl Read + Send + 'static) -> Receiver<String> {
    let (lines, received) = crossbeam_channel::unbounded();
    thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    received
}

/// Variables of the test environment a `listen` child must not inherit.
const INHERITED: [&str; 8] = [
    "PORTAINER_URL",
    "PORTAINER_API_KEY",
    "PORTAINER_USERNAME",
    "PORTAINER_PASSWORD",
    "DOCKER_HOST",
    "DOCKER_TLS_VERIFY",
    "DOCKER_TLS",
    "DOCKER_CERT_PATH",
];

/// Starts `listen` with `args` and only the variables `vars` of those
/// above; its stdout and stderr lines arrive on the receivers.
fn spawn_listen(
    args: &[&str],
    vars: &[(&str, &str)],
) -> (Child, Receiver<String>, Receiver<String>) {
    let mut command = Command::new(listen_binary());
    for name in INHERITED {
        command.env_remove(name);
    }
    let mut child = command
        .args(args)
        .envs(vars.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = lines_of(child.stdout.take().unwrap());
    let stderr = lines_of(child.stderr.take().unwrap());
    (child, stdout, stderr)
}

/// Starts `listen` on the Portainer stand-in with `args`; its stdout lines
/// arrive on the receiver.
fn start_listen(env: &DockerEnv, args: &[&str]) -> (Child, Receiver<String>) {
    let vars = [
        ("PORTAINER_URL", env.url.as_str()),
        ("PORTAINER_API_KEY", env.api_key.as_str()),
    ];
    let (child, stdout, _) = spawn_listen(args, &vars);
    (child, stdout)
}

/// Stops a child by its own id with SIGINT, as Ctrl-C would.
fn interrupt(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("listen did not exit");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Reads `listen --json` lines until container `name` is destroyed; returns
/// its actions, checking each line's endpoint and type.
fn json_lifecycle(lines: &Receiver<String>, name: &str, endpoint_id: u64) -> Vec<String> {
    let mut actions = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !actions.contains(&"destroy".to_string()) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("listen printed no destroy for {name}; saw {actions:?}"));
        let json: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(json["endpoint_id"], endpoint_id);
        assert_eq!(
            json["event"]["Type"], "container",
            "--type container was not applied"
        );
        if json["event"]["Actor"]["Attributes"]["name"] == name {
            actions.push(json["event"]["Action"].as_str().unwrap().to_string());
        }
    }
    for action in ["create", "start", "die", "destroy"] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} missing: {actions:?}"
        );
    }
    actions
}

/// `--since` one second ago: the events replay even if the container runs
/// before the stream is open.
fn a_second_ago() -> String {
    (Timestamp::now().unix_nanos() / 1_000_000_000 - 1).to_string()
}

#[test]
fn listen_json_prints_a_container_lifecycle_and_exits_0_on_ctrl_c() {
    let Some(env) = docker_env() else { return };
    let name = unique_name("listen");
    let since = a_second_ago();
    let (mut child, lines) = start_listen(
        &env,
        &[
            "--json",
            "--endpoint",
            "1",
            "--type",
            "container",
            "--since",
            &since,
        ],
    );
    env.run_container(&name);
    json_lifecycle(&lines, &name, 1);
    interrupt(&child);
    assert!(wait_exit(&mut child).success());
}

#[test]
fn listen_with_until_prints_the_window_and_exits_0() {
    let Some(env) = docker_env() else { return };
    let name = unique_name("until");
    let since = Timestamp::now();
    env.run_container(&name);
    let until = Timestamp::now();
    let (mut child, lines) = start_listen(
        &env,
        &[
            "--endpoint",
            "2",
            "--since",
            &since.to_string(),
            "--until",
            &until.to_string(),
        ],
    );
    let status = wait_exit(&mut child);
    assert!(status.success(), "{status:?}");
    let printed: Vec<String> = lines.try_iter().collect();
    let ours: Vec<&String> = printed.iter().filter(|l| l.contains(&name)).collect();
    assert!(
        ours.iter()
            .any(|l| l.contains("endpoint=2 container destroy")),
        "{printed:?}"
    );
}

#[test]
fn listen_with_a_bad_key_exits_1() {
    let Some(env) = docker_env() else { return };
    let output = Command::new(listen_binary())
        .args(["--url", &env.url, "--api-key", "wrong", "--endpoint", "1"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("401"), "{stderr}");
}

#[test]
fn listen_without_a_url_follows_docker_host_and_says_so_first() {
    let Some(env) = docker_env() else { return };
    let name = unique_name("engine");
    let since = a_second_ago();
    let (mut child, lines, stderr) = spawn_listen(
        &["--json", "--type", "container", "--since", &since],
        &[("DOCKER_HOST", env.docker_host.as_str())],
    );
    let first = stderr.recv_timeout(PATIENCE).expect("a first stderr line");
    assert!(
        first.contains("Docker Engine") && first.contains(&env.docker_host),
        "{first}"
    );
    env.run_container(&name);
    json_lifecycle(&lines, &name, 0);
    interrupt(&child);
    assert!(wait_exit(&mut child).success());
}

#[test]
fn listen_reads_docker_tls_verify_and_the_cert_path() {
    let Some(env) = docker_env() else { return };
    let name = unique_name("engine-tls");
    let since = Timestamp::now();
    env.run_container(&name);
    let until = Timestamp::now();
    let (mut child, lines, stderr) = spawn_listen(
        &["--since", &since.to_string(), "--until", &until.to_string()],
        &[
            ("DOCKER_HOST", env.docker_tls_host.as_str()),
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", env.docker_cert_path.as_str()),
        ],
    );
    let status = wait_exit(&mut child);
    let errors: Vec<String> = stderr.try_iter().collect();
    assert!(status.success(), "{status:?}: {errors:?}");
    let printed: Vec<String> = lines.try_iter().collect();
    assert!(
        printed
            .iter()
            .any(|l| l.contains(&name) && l.contains("endpoint=0 container destroy")),
        "{printed:?}"
    );
}
