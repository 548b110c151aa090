//! The `listen` example (the main job) against the real daemon.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use portainer::Timestamp;
use serde_json::Value;

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

/// Starts `listen` with `args`; its stdout lines arrive on the receiver.
fn start_listen(env: &DockerEnv, args: &[&str]) -> (Child, Receiver<String>) {
    let mut child = Command::new(listen_binary())
        .args(args)
        .env("PORTAINER_URL", &env.url)
        .env("PORTAINER_API_KEY", &env.api_key)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines, received) = crossbeam_channel::unbounded();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    (child, received)
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

#[test]
fn listen_json_prints_a_container_lifecycle_and_exits_0_on_ctrl_c() {
    let Some(env) = docker_env() else { return };
    let name = unique_name("listen");
    // Starting a little in the past makes the events replay even if the
    // container runs before the stream is open.
    let since = (Timestamp::now().unix_nanos() / 1_000_000_000 - 1).to_string();
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

    let mut actions = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !actions.contains(&"destroy".to_string()) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("listen printed no destroy for {name}; saw {actions:?}"));
        let json: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(json["endpoint_id"], 1);
        assert_eq!(
            json["event"]["Type"], "container",
            "--type container was not applied"
        );
        if json["event"]["Actor"]["Attributes"]["name"] == name.as_str() {
            actions.push(json["event"]["Action"].as_str().unwrap().to_string());
        }
    }
    for action in ["create", "start", "die", "destroy"] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} missing: {actions:?}"
        );
    }
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
