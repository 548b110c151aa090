//! A Docker Engine reached directly: its address as `DOCKER_HOST` writes
//! it, and the `DOCKER_*` variables the docker CLI reads.

use std::path::PathBuf;

use ureq::http::Uri;

use crate::error::{Error, redact_url};

/// The address of the Docker Engine a client made by
/// [`Client::from_docker_env`](crate::Client::from_docker_env) talks to when
/// `DOCKER_HOST` is not set: `unix:///var/run/docker.sock`.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// The id of the one endpoint a Docker Engine client has: 0, which
/// Portainer never gives an environment.
pub const ENGINE_ENDPOINT_ID: u64 = 0;

/// Where an engine listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EngineAddress {
    /// A unix socket.
    Unix(PathBuf),
    /// TCP: the host (IPv6 in brackets), the port when given, and a base path.
    Tcp {
        host: String,
        port: Option<u16>,
        path: String,
    },
}

impl EngineAddress {
    /// Reads a `DOCKER_HOST` value: `unix:///path` (`unix://` alone is the
    /// default socket) or `tcp://host[:port][/path]`.
    pub(crate) fn parse(docker_host: &str) -> Result<EngineAddress, Error> {
        let fail = |reason: &str| Error::InvalidUrl {
            url: redact_url(docker_host),
            reason: reason.into(),
        };
        let (scheme, rest) = docker_host
            .split_once("://")
            .ok_or_else(|| fail("a Docker host starts with unix:// or tcp://"))?;
        match scheme.to_ascii_lowercase().as_str() {
            "unix" => {
                let path = match rest {
                    "" => DEFAULT_DOCKER_HOST.trim_start_matches("unix://"),
                    path if path.starts_with('/') => path,
                    _ => return Err(fail("a unix socket path must be absolute")),
                };
                Ok(EngineAddress::Unix(PathBuf::from(path)))
            }
            "tcp" => {
                let uri: Uri = format!("http://{rest}")
                    .parse()
                    .map_err(|_| fail("not a host and port"))?;
                let authority = uri.authority().ok_or_else(|| fail("no host"))?;
                if authority.as_str().contains('@') || uri.query().is_some() {
                    return Err(fail("credentials and query strings are not allowed"));
                }
                if authority.host().is_empty() {
                    return Err(fail("no host"));
                }
                Ok(EngineAddress::Tcp {
                    host: authority.host().to_string(),
                    port: authority.port_u16(),
                    path: uri.path().trim_end_matches('/').to_string(),
                })
            }
            "ssh" | "npipe" | "fd" => Err(fail(
                "only unix:// and tcp:// Docker hosts are supported by this crate",
            )),
            _ => Err(fail("a Docker host starts with unix:// or tcp://")),
        }
    }

    /// The base URL of requests: a placeholder host for a unix socket (the
    /// connector ignores it), and Docker's default ports 2375 and 2376 for
    /// TCP without and with TLS.
    pub(crate) fn base_url(&self, tls: bool) -> String {
        match self {
            EngineAddress::Unix(_) => "http://localhost".into(),
            EngineAddress::Tcp { host, port, path } => {
                let scheme = if tls { "https" } else { "http" };
                let port = port.unwrap_or(if tls { 2376 } else { 2375 });
                format!("{scheme}://{host}:{port}{path}")
            }
        }
    }
}

/// What the docker CLI's variables ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DockerEnv {
    /// `DOCKER_HOST`, or [`DEFAULT_DOCKER_HOST`].
    pub(crate) host: String,
    /// The folder of `ca.pem`, `cert.pem` and `key.pem` when TLS is on
    /// (`DOCKER_TLS_VERIFY` or `DOCKER_TLS` not empty): `DOCKER_CERT_PATH`,
    /// else `DOCKER_CONFIG`, else `~/.docker`.
    pub(crate) tls_cert_path: Option<PathBuf>,
}

impl DockerEnv {
    /// Reads the variables through `env`.
    pub(crate) fn read(env: impl Fn(&str) -> Option<String>) -> DockerEnv {
        let set = |name: &str| env(name).filter(|value| !value.is_empty());
        let host = set("DOCKER_HOST").unwrap_or_else(|| DEFAULT_DOCKER_HOST.into());
        let tls = set("DOCKER_TLS_VERIFY").is_some() || set("DOCKER_TLS").is_some();
        let tls_cert_path = tls.then(|| {
            set("DOCKER_CERT_PATH")
                .or_else(|| set("DOCKER_CONFIG"))
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    let home = set("HOME").unwrap_or_default();
                    PathBuf::from(home).join(".docker")
                })
        });
        DockerEnv {
            host,
            tls_cert_path,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hosts_parse_like_the_docker_cli() {
        assert_eq!(
            EngineAddress::parse("unix:///run/user/1000/docker.sock").unwrap(),
            EngineAddress::Unix("/run/user/1000/docker.sock".into())
        );
        assert_eq!(
            EngineAddress::parse("unix://").unwrap(),
            EngineAddress::Unix("/var/run/docker.sock".into())
        );
        let tcp = EngineAddress::parse("tcp://10.0.0.5").unwrap();
        assert_eq!(tcp.base_url(false), "http://10.0.0.5:2375");
        assert_eq!(tcp.base_url(true), "https://10.0.0.5:2376");
        let with_path = EngineAddress::parse("tcp://[::1]:1234/docker/").unwrap();
        assert_eq!(with_path.base_url(false), "http://[::1]:1234/docker");
        for bad in [
            "ssh://me@host",
            "npipe:////./pipe/docker_engine",
            "/var/run/docker.sock",
            "unix://relative.sock",
            "tcp://",
            "tcp://user:secret@h:2375",
            "http://h:2375",
        ] {
            let err = EngineAddress::parse(bad).unwrap_err().to_string();
            assert!(!err.contains("secret"), "{err}");
        }
    }

    #[test]
    fn docker_variables_are_read_as_the_docker_cli_reads_them() {
        let read = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            DockerEnv::read(move |name| {
                pairs
                    .iter()
                    .find(|(key, _)| key == name)
                    .map(|(_, value)| value.clone())
            })
        };
        assert_eq!(
            read(&[("HOME", "/root")]),
            DockerEnv {
                host: DEFAULT_DOCKER_HOST.into(),
                tls_cert_path: None
            }
        );
        assert_eq!(
            read(&[("DOCKER_HOST", ""), ("DOCKER_TLS_VERIFY", "")]).host,
            DEFAULT_DOCKER_HOST
        );
        let tls = read(&[
            ("DOCKER_HOST", "tcp://h:2376"),
            ("DOCKER_TLS_VERIFY", "1"),
            ("HOME", "/home/me"),
        ]);
        assert_eq!(tls.host, "tcp://h:2376");
        assert_eq!(tls.tls_cert_path, Some("/home/me/.docker".into()));
        let certs = read(&[("DOCKER_TLS", "1"), ("DOCKER_CERT_PATH", "/certs")]);
        assert_eq!(certs.tls_cert_path, Some("/certs".into()));
    }
}
