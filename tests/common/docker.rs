//! Access to the real Docker daemon and nginx front that `scripts/dev-env.sh`
//! starts, described by environment variables.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where the test environment is.
#[derive(Debug, Clone)]
pub struct DockerEnv {
    /// The nginx front that stands in for Portainer.
    pub url: String,
    pub api_key: String,
    /// The daemon's own socket, for the docker CLI.
    pub docker_host: String,
    /// A small image that has `sh`.
    pub image: String,
}

/// The environment, or `None` (with a message) when none is configured. On
/// CI a missing environment is a failure, never a skip.
pub fn docker_env() -> Option<DockerEnv> {
    let get = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (
        get("PORTAINER_TEST_URL"),
        get("PORTAINER_TEST_API_KEY"),
        get("PORTAINER_TEST_DOCKER_HOST"),
        get("PORTAINER_TEST_IMAGE"),
    ) {
        (Some(url), Some(api_key), Some(docker_host), Some(image)) => Some(DockerEnv {
            url,
            api_key,
            docker_host,
            image,
        }),
        _ => {
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
