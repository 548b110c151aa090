//! The blocking client: endpoint list, event stream and bounded event windows,
//! from Portainer or from a Docker Engine reached directly.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use ureq::config::ConfigBuilder;
use ureq::http::{Response, Uri};
use ureq::tls::TlsConfig;
use ureq::typestate::AgentScope;
use ureq::{Agent, Body};

use crate::auth::{Auth, Credential, check_header_value};
use crate::endpoint::{Endpoint, EndpointStatus, EndpointType};
use crate::engine::{DockerEnv, ENGINE_ENDPOINT_ID, EngineAddress};
use crate::error::{Error, excerpt, redact_url};
use crate::event::DockerEvent;
use crate::proxy::{self, ChosenProxy, ProxySetting};
use crate::query::{EventQuery, Timestamp};
use crate::stream::EventStream;
use crate::tls::TlsSettings;
use crate::transport::{self, Cancel, Dial, Keepalive, SocketResolver};

/// The default timeout of ordinary calls, and of connecting and receiving
/// response headers for streams.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The default maximum length of one line of the event stream: 1 MiB.
/// Docker's events are well under 10 KiB.
pub const DEFAULT_MAX_LINE_LENGTH: usize = 1024 * 1024;

/// The input buffer of a stream's connection: room for the response head.
const STREAM_INPUT_BUFFER: usize = 8 * 1024;

/// The output buffer of a stream's connection: room for the request head.
const STREAM_OUTPUT_BUFFER: usize = 4 * 1024;

/// The most of an error body read to find Portainer's message.
const ERROR_BODY_LIMIT: u64 = 64 * 1024;

/// The most of an endpoint list read into memory.
const LIST_BODY_LIMIT: u64 = 32 * 1024 * 1024;

const USER_AGENT: &str = concat!("portainer-rs/", env!("CARGO_PKG_VERSION"));

/// A blocking client for Portainer's API, or for one Docker Engine's.
///
/// Cheap to clone: clones share one connection pool, configuration and
/// login.
///
/// ```no_run
/// use portainer::{Client, EventQuery};
///
/// # fn main() -> Result<(), portainer::Error> {
/// let client = Client::new("https://portainer.example.com", "ptr_xxx")?;
/// for endpoint in client.endpoints()? {
///     println!("{} {}", endpoint.id, endpoint.name);
/// }
/// for event in client.events(1, &EventQuery::new())? {
///     println!("{:?}", event?);
/// }
/// # Ok(())
/// # }
/// ```
///
/// A Docker Engine reached directly (its unix socket, or `DOCKER_HOST`) has
/// one endpoint, [`ENGINE_ENDPOINT_ID`]; everything else works the same:
///
/// ```no_run
/// use portainer::{Client, ENGINE_ENDPOINT_ID, EventQuery};
///
/// # fn main() -> Result<(), portainer::Error> {
/// let client = Client::from_docker_env()?;
/// for event in client.events(ENGINE_ENDPOINT_ID, &EventQuery::new())? {
///     println!("{:?}", event?);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// Where endpoints and event streams come from.
enum Source {
    /// Portainer, whose endpoints proxy the Docker API under
    /// `/api/endpoints/{id}/docker`.
    Portainer,
    /// One Docker Engine, endpoint [`ENGINE_ENDPOINT_ID`], its API at the
    /// root. `shown` is its address as given (`unix:///...`, `tcp://...`).
    Engine { shown: String },
}

struct Inner {
    source: Source,
    /// The URL requests start with, without a trailing slash.
    base: String,
    dial: Dial,
    auth: Auth,
    tls: TlsConfig,
    /// What `Debug` shows of the TLS settings.
    tls_settings: TlsSettings,
    proxy: Option<ChosenProxy>,
    timeout: Duration,
    keepalive: Option<Keepalive>,
    max_line_length: usize,
    agent: Agent,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("Client")
            .field("url", &self.url())
            .field("auth", &inner.auth.describe())
            .field("tls", &inner.tls_settings)
            .field("proxy", &inner.proxy.as_ref().map(|p| &p.shown))
            .field("timeout", &inner.timeout)
            .field("keepalive", &inner.keepalive)
            .field("max_line_length", &inner.max_line_length)
            .finish()
    }
}

/// What a builder was made for.
#[derive(Clone)]
enum Target {
    Portainer(String),
    DockerHost(String),
    DockerSocket(PathBuf),
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Portainer(url) => write!(f, "Portainer({:?})", redact_url(url)),
            Target::DockerHost(host) => write!(f, "DockerHost({:?})", redact_url(host)),
            Target::DockerSocket(path) => write!(f, "DockerSocket({path:?})"),
        }
    }
}

/// Settings for a [`Client`]; made by [`Client::builder`] for Portainer, or
/// by [`Client::docker_builder`] and [`Client::docker_env_builder`] for a
/// Docker Engine.
#[derive(Clone)]
pub struct ClientBuilder {
    target: Target,
    api_key: Option<String>,
    login: Option<(String, String)>,
    tls: TlsSettings,
    docker_cert_path: Option<PathBuf>,
    proxy: ProxySetting,
    proxy_bypass: Option<String>,
    timeout: Duration,
    keepalive: Option<Keepalive>,
    max_line_length: usize,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proxy = match &self.proxy {
            ProxySetting::Url(url) => format!("{:?}", redact_url(url)),
            other => format!("{other:?}"),
        };
        f.debug_struct("ClientBuilder")
            .field("target", &self.target)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field(
                "login",
                &self
                    .login
                    .as_ref()
                    .map(|(user, _)| format!("{user:?}, password <redacted>")),
            )
            .field("tls", &self.tls)
            .field("docker_cert_path", &self.docker_cert_path)
            .field("proxy", &proxy)
            .field("proxy_bypass", &self.proxy_bypass)
            .field("timeout", &self.timeout)
            .field("keepalive", &self.keepalive)
            .field("max_line_length", &self.max_line_length)
            .finish()
    }
}

impl ClientBuilder {
    fn new(target: Target) -> Self {
        ClientBuilder {
            target,
            api_key: None,
            login: None,
            tls: TlsSettings::default(),
            docker_cert_path: None,
            proxy: ProxySetting::Environment,
            proxy_bypass: None,
            timeout: DEFAULT_TIMEOUT,
            keepalive: Some(Keepalive::default()),
            max_line_length: DEFAULT_MAX_LINE_LENGTH,
        }
    }

    /// The API key, sent as the `X-API-Key` header on every request.
    /// Default: none. Portainer only; not together with
    /// [`login`](Self::login).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Logs in to Portainer with a username and password (`POST /api/auth`)
    /// and sends the token it returns as `Authorization: Bearer`. When the
    /// token expires and a request gets 401, the client logs in once more
    /// and repeats the request; concurrent requests share that login.
    /// Default: none. Portainer only; not together with
    /// [`api_key`](Self::api_key). The password and the token never appear in
    /// `Debug` output, errors or logs.
    pub fn login(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.login = Some((username.into(), password.into()));
        self
    }

    /// Trusts the certificates of this PEM file (a CA bundle, or the
    /// server's own self-signed certificate) instead of the built-in roots
    /// (Mozilla's, through `webpki-roots`). The file is read by
    /// [`build`](Self::build). Default: the built-in roots.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls.ca_file = Some(path.into());
        self
    }

    /// Presents this client certificate (a PEM chain) with its PEM private
    /// key, for servers that ask for one. The files are read by
    /// [`build`](Self::build). Default: none.
    pub fn client_certificate(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls.client_cert = Some((cert.into(), key.into()));
        self
    }

    /// **Dangerous**: accepts any server certificate, also one that is
    /// self-signed, expired or for another host. The connection is then
    /// encrypted but not authenticated: anyone on the path can read and change
    /// it, API key, password and token included. Portainer serves a
    /// self-signed certificate on port 9443 until it is given one; prefer
    /// [`ca_file`](Self::ca_file) with that certificate. Building a client
    /// with this on logs a warning. Default: `false`.
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> Self {
        self.tls.accept_invalid_certs = accept;
        self
    }

    /// Speaks TLS to a `tcp://` Docker Engine as the docker CLI does with
    /// `DOCKER_TLS_VERIFY=1` and `DOCKER_CERT_PATH=dir`: the daemon's
    /// certificate is checked against `dir/ca.pem` (the built-in roots when
    /// it does not exist), and `dir/cert.pem` with `dir/key.pem` are
    /// presented when both exist. [`ca_file`](Self::ca_file) and
    /// [`client_certificate`](Self::client_certificate) take precedence.
    /// The default port becomes 2376. Default: no TLS.
    pub fn docker_tls_verify(mut self, dir: impl Into<PathBuf>) -> Self {
        self.docker_cert_path = Some(dir.into());
        self
    }

    /// Sends every request through this HTTP proxy (`http://host:port`, or
    /// `https://` to reach the proxy itself over TLS; credentials as
    /// `http://user:password@host:port`). Requests are tunnelled with
    /// `CONNECT`, for `http://` URLs too. SOCKS proxies are not supported.
    /// Never used for a unix socket. Default: the proxy the environment
    /// names for the URL's scheme (`HTTPS_PROXY`, `HTTP_PROXY`, then
    /// `ALL_PROXY`, upper or lower case), except for hosts that `NO_PROXY`
    /// exempts and for loopback addresses.
    pub fn proxy(mut self, url: impl Into<String>) -> Self {
        self.proxy = ProxySetting::Url(url.into());
        self
    }

    /// Connects directly, whatever proxy the environment names.
    /// Default: the environment's proxy (see [`proxy`](Self::proxy)).
    pub fn without_proxy(mut self) -> Self {
        self.proxy = ProxySetting::Off;
        self
    }

    /// Hosts reached without the proxy, in `NO_PROXY`'s syntax: a
    /// comma-separated list of domains (each matching its subdomains too,
    /// with or without a leading `.`), IP addresses, CIDR blocks such as
    /// `10.0.0.0/8`, any of them with `:port`, or `*` for all. Default:
    /// `NO_PROXY` for a proxy from the environment, nothing for one set with
    /// [`proxy`](Self::proxy).
    pub fn proxy_bypass(mut self, hosts: impl Into<String>) -> Self {
        self.proxy_bypass = Some(hosts.into());
        self
    }

    /// The timeout of ordinary calls such as [`Client::endpoints`], and of
    /// connecting and receiving response headers when opening a stream. An
    /// open stream has no overall timeout. Default: [`DEFAULT_TIMEOUT`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// TCP keepalive on event-stream sockets, or `None` to leave it off.
    /// Default: [`Keepalive::default`], which notices a vanished peer in
    /// about a minute. Unix sockets need none.
    pub fn keepalive(mut self, keepalive: Option<Keepalive>) -> Self {
        self.keepalive = keepalive;
        self
    }

    /// The longest line the event stream may send. A longer line is reported
    /// as [`Error::LineTooLong`] and discarded up to its newline. Default:
    /// [`DEFAULT_MAX_LINE_LENGTH`].
    pub fn max_line_length(mut self, bytes: usize) -> Self {
        self.max_line_length = bytes.max(1);
        self
    }

    /// Checks the settings, reads the TLS files and makes the client.
    ///
    /// Errors: an unusable URL, Docker host or proxy; a TLS file that cannot
    /// be read; settings that do not go together (an API key and a login; a
    /// key or login for a Docker Engine; TLS settings for a plain `http://`
    /// URL or a unix socket).
    pub fn build(self) -> Result<Client, Error> {
        let (source, base, dial, tls_settings) = self.locate()?;
        let auth = self.auth(&source)?;
        let tls = tls_settings.to_config()?;
        if tls_settings.accept_invalid_certs {
            log::warn!(
                "TLS certificate verification is off for {}: the connection can be read \
                 and changed by anyone on the path",
                redact_url(&base)
            );
        }
        let proxy = match dial {
            Dial::Unix(_) => None,
            Dial::Tcp => {
                // `locate` checked the URL.
                let uri: Uri = base.parse().expect("a checked URL");
                proxy::choose(&self.proxy, self.proxy_bypass.as_deref(), &uri, |name| {
                    std::env::var(name).ok()
                })?
            }
        };
        let config = agent_config(proxy.as_ref(), &tls)
            .timeout_global(Some(self.timeout))
            .build();
        let agent = Agent::with_parts(
            config,
            transport::connector(dial.clone(), None, None),
            SocketResolver::new(&dial),
        );
        Ok(Client {
            inner: Arc::new(Inner {
                source,
                base,
                dial,
                auth,
                tls,
                tls_settings,
                proxy,
                timeout: self.timeout,
                keepalive: self.keepalive,
                max_line_length: self.max_line_length,
                agent,
            }),
        })
    }

    /// The source, base URL, socket kind and TLS settings of the target.
    fn locate(&self) -> Result<(Source, String, Dial, TlsSettings), Error> {
        let plain_but_tls = |what: &str| {
            Error::Config(format!(
                "TLS settings were given, but {what} is spoken to without TLS"
            ))
        };
        let (shown, address) = match &self.target {
            Target::Portainer(url) => {
                let base = check_url(url)?;
                if self.docker_cert_path.is_some() {
                    return Err(Error::Config(
                        "docker_tls_verify applies to a tcp:// Docker Engine, not Portainer".into(),
                    ));
                }
                if self.tls.is_set() && !base.starts_with("https://") {
                    return Err(plain_but_tls(&redact_url(&base)));
                }
                return Ok((Source::Portainer, base, Dial::Tcp, self.tls.clone()));
            }
            Target::DockerHost(host) => (redact_url(host), EngineAddress::parse(host)?),
            Target::DockerSocket(path) => (
                format!("unix://{}", path.display()),
                EngineAddress::Unix(path.clone()),
            ),
        };
        let source = Source::Engine { shown };
        match &address {
            EngineAddress::Unix(path) => {
                if self.tls.is_set() || self.docker_cert_path.is_some() {
                    return Err(plain_but_tls("a unix socket"));
                }
                let dial = Dial::Unix(path.clone());
                Ok((
                    source,
                    address.base_url(false),
                    dial,
                    TlsSettings::default(),
                ))
            }
            EngineAddress::Tcp { .. } => {
                let Some(dir) = &self.docker_cert_path else {
                    if self.tls.is_set() {
                        return Err(plain_but_tls(
                            "a tcp:// Docker Engine without docker_tls_verify",
                        ));
                    }
                    return Ok((source, address.base_url(false), Dial::Tcp, self.tls.clone()));
                };
                let tls = self.tls.clone().or_from_cert_dir(dir);
                Ok((source, address.base_url(true), Dial::Tcp, tls))
            }
        }
    }

    fn auth(&self, source: &Source) -> Result<Auth, Error> {
        match (&self.api_key, &self.login, source) {
            (None, None, _) => Ok(Auth::None),
            (_, _, Source::Engine { .. }) => Err(Error::Config(
                "a Docker Engine takes no API key or login; those are Portainer's".into(),
            )),
            (Some(_), Some(_), _) => Err(Error::Config(
                "give an API key or a login, not both (Portainer refuses requests with both)"
                    .into(),
            )),
            (Some(key), None, _) => {
                check_header_value("API key", key)?;
                Ok(Auth::ApiKey(key.clone()))
            }
            (None, Some((username, password)), _) => {
                if username.is_empty() || password.is_empty() {
                    return Err(Error::Config("the username or password is empty".into()));
                }
                Ok(Auth::login(username.clone(), password.clone()))
            }
        }
    }
}

/// The agent settings ordinary calls and streams share.
fn agent_config(proxy: Option<&ChosenProxy>, tls: &TlsConfig) -> ConfigBuilder<AgentScope> {
    // Redirects are not followed: ureq would carry the `X-API-Key` header to
    // whatever host a redirect names. A 3xx is reported as an error instead.
    Agent::config_builder()
        .max_redirects(0)
        .http_status_as_error(false)
        .proxy(proxy.map(|chosen| chosen.proxy.clone()))
        .tls_config(tls.clone())
        .user_agent(USER_AGENT)
}

/// Portainer's error body.
#[derive(Deserialize)]
struct ErrorBody {
    message: Option<String>,
    details: Option<String>,
}

/// Portainer's login request and reply.
#[derive(Serialize)]
struct LoginRequest<'a> {
    username: &'a str,
    password: &'a str,
}

#[derive(Deserialize)]
struct LoginReply {
    jwt: String,
}

impl Client {
    /// A client for the Portainer at `url` (a base path such as
    /// `https://host/portainer` works) using `api_key`.
    pub fn new(url: &str, api_key: &str) -> Result<Client, Error> {
        Client::builder(url).api_key(api_key).build()
    }

    /// Settings for a client of the Portainer at `url`, with defaults.
    pub fn builder(url: &str) -> ClientBuilder {
        ClientBuilder::new(Target::Portainer(url.to_string()))
    }

    /// A client for the Docker Engine listening on the unix socket at
    /// `path`, such as `/var/run/docker.sock`. A relative path is taken from
    /// the current directory.
    pub fn docker_socket(path: impl AsRef<Path>) -> Result<Client, Error> {
        let path = std::path::absolute(path.as_ref()).map_err(|err| {
            Error::Config(format!("socket path {}: {err}", path.as_ref().display()))
        })?;
        ClientBuilder::new(Target::DockerSocket(path)).build()
    }

    /// Settings for a client of the Docker Engine at `docker_host`, written
    /// as `DOCKER_HOST` would be: `unix:///var/run/docker.sock` or
    /// `tcp://host:2375` (add [`docker_tls_verify`](ClientBuilder::docker_tls_verify)
    /// for TLS). Other schemes (`ssh://`, `npipe://`) are refused by
    /// [`build`](ClientBuilder::build).
    pub fn docker_builder(docker_host: &str) -> ClientBuilder {
        ClientBuilder::new(Target::DockerHost(docker_host.to_string()))
    }

    /// Settings for a client of the Docker Engine the environment names, as
    /// the docker CLI reads it: `DOCKER_HOST` (default
    /// [`DEFAULT_DOCKER_HOST`](crate::DEFAULT_DOCKER_HOST)), and for a
    /// `tcp://` host TLS when `DOCKER_TLS_VERIFY` is set, with the files of
    /// `DOCKER_CERT_PATH` (default `~/.docker`). `DOCKER_TLS` alone turns TLS
    /// on too, but unlike the docker CLI this crate still verifies the
    /// daemon's certificate. Docker contexts (`docker context use`) are not
    /// read.
    pub fn docker_env_builder() -> ClientBuilder {
        let env = DockerEnv::read(|name| std::env::var(name).ok());
        let builder = Client::docker_builder(&env.host);
        match env.tls_cert_path {
            Some(dir) if !env.host.starts_with("unix:") => builder.docker_tls_verify(dir),
            _ => builder,
        }
    }

    /// A client for the Docker Engine the environment names; see
    /// [`docker_env_builder`](Self::docker_env_builder).
    pub fn from_docker_env() -> Result<Client, Error> {
        Client::docker_env_builder().build()
    }

    /// Where the client connects: the Portainer URL without a trailing
    /// slash, or the Docker Engine's address as given
    /// (`unix:///var/run/docker.sock`, `tcp://host:2376`).
    pub fn url(&self) -> &str {
        match &self.inner.source {
            Source::Portainer => &self.inner.base,
            Source::Engine { shown } => shown,
        }
    }

    /// Whether the client talks to a Docker Engine directly rather than
    /// to Portainer.
    pub fn is_docker_engine(&self) -> bool {
        matches!(self.inner.source, Source::Engine { .. })
    }

    /// Portainer's endpoints (`GET /api/endpoints`). For a Docker Engine,
    /// after checking that it answers (`GET /_ping`), its one endpoint:
    /// id [`ENGINE_ENDPOINT_ID`], type [`EndpointType::Docker`], status up,
    /// and its address as name and URL.
    pub fn endpoints(&self) -> Result<Vec<Endpoint>, Error> {
        self.fetch_endpoints(&self.inner.agent)
    }

    /// The endpoint list over a connection that `cancel` can shut down.
    pub(crate) fn endpoints_cancellable(
        &self,
        cancel: Arc<Cancel>,
    ) -> Result<Vec<Endpoint>, Error> {
        let agent = self.cancellable_agent(cancel.clone(), Some(self.inner.timeout));
        let result = self.fetch_endpoints(&agent);
        cancel_release_on_err(&result, &cancel);
        result
    }

    fn fetch_endpoints(&self, agent: &Agent) -> Result<Vec<Endpoint>, Error> {
        let url = match &self.inner.source {
            Source::Portainer => format!("{}/api/endpoints", self.inner.base),
            Source::Engine { .. } => format!("{}/_ping", self.inner.base),
        };
        let mut response = self.get(agent, &url, &[])?;
        let body = response
            .body_mut()
            .with_config()
            .limit(LIST_BODY_LIMIT)
            .read_to_vec()?;
        match &self.inner.source {
            Source::Portainer => {
                serde_json::from_slice(&body).map_err(|err| Error::decode(err, &body))
            }
            Source::Engine { shown } => Ok(vec![Endpoint {
                id: ENGINE_ENDPOINT_ID,
                name: shown.clone(),
                kind: EndpointType::Docker,
                status: EndpointStatus::Up,
                url: shown.clone(),
            }]),
        }
    }

    /// Follows the events of one endpoint as they happen
    /// (`GET /api/endpoints/{id}/docker/events`, or `GET /events` of a
    /// Docker Engine, whose only endpoint is [`ENGINE_ENDPOINT_ID`]).
    ///
    /// Returns once the response headers arrive; the stream then yields each
    /// event as the daemon sends it. With `until` in the query, the daemon
    /// closes the stream at that time and the iterator ends. See
    /// [`EventStream`] for when it blocks and ends.
    pub fn events(&self, endpoint_id: u64, query: &EventQuery) -> Result<EventStream, Error> {
        self.open_stream(endpoint_id, query, Arc::new(Cancel::default()))
    }

    /// All events of a bounded window, `since` to `until` (default: now).
    ///
    /// `since` is required. A malformed line in the window is logged and
    /// skipped; a broken connection is an error, since the window would be
    /// incomplete.
    ///
    /// Docker keeps only its last 256 events, so a window further back than
    /// that returns what is left of it.
    pub fn recent_events(
        &self,
        endpoint_id: u64,
        query: &EventQuery,
    ) -> Result<Vec<DockerEvent>, Error> {
        if query.since_time().is_none() {
            return Err(Error::Config("recent_events needs a `since` time".into()));
        }
        let query = match query.until_time() {
            Some(_) => query.clone(),
            None => query.clone().until(Timestamp::now()),
        };
        let mut events = Vec::new();
        for item in self.events(endpoint_id, &query)? {
            match item {
                Ok(event) => events.push(event),
                Err(err) if err.is_line_error() => {
                    log::warn!("endpoint {endpoint_id}: skipped a line of the event window: {err}");
                }
                Err(err) => return Err(err),
            }
        }
        Ok(events)
    }

    /// Opens an event stream whose socket `cancel` can shut down.
    pub(crate) fn open_stream(
        &self,
        endpoint_id: u64,
        query: &EventQuery,
        cancel: Arc<Cancel>,
    ) -> Result<EventStream, Error> {
        let result = self.try_open_stream(endpoint_id, query, cancel.clone());
        cancel_release_on_err(&result, &cancel);
        result
    }

    fn try_open_stream(
        &self,
        endpoint_id: u64,
        query: &EventQuery,
        cancel: Arc<Cancel>,
    ) -> Result<EventStream, Error> {
        let url = self.docker_url(endpoint_id, "/events")?;
        let agent = self.cancellable_agent(cancel.clone(), None);
        let response = self.get(&agent, &url, &query.params())?;
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let mut body = response.into_body().into_reader();
        if content_type.contains("html") {
            let mut start = Vec::new();
            let _ = (&mut body).take(ERROR_BODY_LIMIT).read_to_end(&mut start);
            return Err(Error::UnexpectedResponse {
                content_type,
                excerpt: excerpt(&start),
            });
        }
        Ok(EventStream::new(body, cancel, self.inner.max_line_length))
    }

    /// The URL of a Docker API `path` on an endpoint.
    fn docker_url(&self, endpoint_id: u64, path: &str) -> Result<String, Error> {
        let base = &self.inner.base;
        match &self.inner.source {
            Source::Portainer => Ok(format!("{base}/api/endpoints/{endpoint_id}/docker{path}")),
            Source::Engine { .. } if endpoint_id == ENGINE_ENDPOINT_ID => {
                Ok(format!("{base}{path}"))
            }
            Source::Engine { shown } => Err(Error::NotFound {
                message: format!(
                    "{shown} is a Docker Engine, whose only endpoint is {ENGINE_ENDPOINT_ID}"
                ),
            }),
        }
    }

    /// An agent of its own for one request: its connector hands the socket
    /// to `cancel`. Connecting and receiving the response headers have the
    /// client's timeout; the body has `body_timeout` (none for a stream).
    fn cancellable_agent(&self, cancel: Arc<Cancel>, body_timeout: Option<Duration>) -> Agent {
        let inner = &self.inner;
        let timeout = Some(inner.timeout);
        let config = agent_config(inner.proxy.as_ref(), &inner.tls)
            .timeout_global(body_timeout)
            .timeout_resolve(timeout)
            .timeout_connect(timeout)
            .timeout_send_request(timeout)
            .timeout_recv_response(timeout)
            .timeout_recv_body(body_timeout)
            .max_idle_connections(0)
            // ureq's defaults (128 KiB each way) would dominate the memory of
            // a listener with many idle streams; the response head must still
            // fit in the input buffer.
            .input_buffer_size(STREAM_INPUT_BUFFER)
            .max_response_header_size(STREAM_INPUT_BUFFER)
            .output_buffer_size(STREAM_OUTPUT_BUFFER)
            .build();
        Agent::with_parts(
            config,
            transport::connector(inner.dial.clone(), inner.keepalive, Some(cancel)),
            SocketResolver::new(&inner.dial),
        )
    }

    /// Sends a GET with the client's credentials and checks its status. A
    /// login token refused with 401 (expired, or Portainer restarted) is
    /// renewed once and the request sent again.
    fn get(
        &self,
        agent: &Agent,
        url: &str,
        params: &[(&'static str, String)],
    ) -> Result<Response<Body>, Error> {
        let send = |credential: &Credential| {
            let mut request = credential.apply(agent.get(url));
            for (key, value) in params {
                request = request.query(*key, value);
            }
            check_status(request.call()?)
        };
        let auth = &self.inner.auth;
        let credential = auth.credential(|user, password| self.log_in(user, password))?;
        let refused = match send(&credential) {
            Err(Error::Unauthorized { message }) => message,
            other => return other,
        };
        match auth.renew(&credential, |user, password| {
            log::debug!("the login token was refused ({refused}); logging in again");
            self.log_in(user, password)
        }) {
            Some(renewed) => send(&renewed?),
            None => Err(Error::Unauthorized { message: refused }),
        }
    }

    /// Logs in to Portainer and returns the token. Refused credentials
    /// (Portainer answers 422, or 401) are [`Error::Unauthorized`].
    fn log_in(&self, username: &str, password: &str) -> Result<String, Error> {
        let url = format!("{}/api/auth", self.inner.base);
        // Serialising two strings cannot fail.
        let body = serde_json::to_vec(&LoginRequest { username, password })
            .expect("a login request serialises");
        let response = self
            .inner
            .agent
            .post(&url)
            .content_type("application/json")
            .send(&body[..])?;
        let mut response = match check_status(response) {
            Err(Error::Status {
                status: 422,
                message,
            }) => Err(Error::Unauthorized { message }),
            other => other,
        }?;
        let reply = response
            .body_mut()
            .with_config()
            .limit(ERROR_BODY_LIMIT)
            .read_to_vec()?;
        // The reply holds the token: it must not reach the error's excerpt.
        let token = serde_json::from_slice::<LoginReply>(&reply)
            .map(|reply| reply.jwt)
            .map_err(|err| Error::Decode {
                reason: format!("the login reply is not {{\"jwt\": ...}} ({err})"),
                excerpt: String::new(),
            })?;
        check_header_value("login token", &token)?;
        log::debug!("logged in to {} as {username:?}", self.inner.base);
        Ok(token)
    }
}

/// Lets go of the socket handle a failed request left behind, so the
/// connection closes now rather than at the next attempt.
fn cancel_release_on_err<T>(result: &Result<T, Error>, cancel: &Cancel) {
    if result.is_err() {
        cancel.release();
    }
}

/// Turns a status that is not a success into the matching error, with
/// Portainer's message.
fn check_status(mut response: Response<ureq::Body>) -> Result<Response<ureq::Body>, Error> {
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(response);
    }
    let mut body = Vec::new();
    let _ = response
        .body_mut()
        .as_reader()
        .take(ERROR_BODY_LIMIT)
        .read_to_end(&mut body);
    let message = error_message(&body);
    Err(match status {
        401 => Error::Unauthorized { message },
        403 => Error::Forbidden { message },
        404 => Error::NotFound { message },
        _ => Error::Status { status, message },
    })
}

/// Portainer's (or Docker's) `message`, with `details` when they add
/// something; otherwise an excerpt of the body.
fn error_message(body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody {
            message: Some(message),
            details,
        }) => match details {
            Some(details) if !details.is_empty() && details != message => {
                format!("{message} ({details})")
            }
            _ => message,
        },
        _ => excerpt(body),
    }
}

/// Checks that `url` is an absolute http(s) URL without query or credentials,
/// and returns it without a trailing slash.
fn check_url(url: &str) -> Result<String, Error> {
    let fail = |reason: &str| Error::InvalidUrl {
        url: redact_url(url),
        reason: reason.into(),
    };
    let uri: Uri = url.parse().map_err(|_| fail("not a URL"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(fail("the scheme must be http or https")),
    }
    let authority = uri.authority().ok_or_else(|| fail("no host"))?;
    if authority.as_str().contains('@') {
        return Err(fail("credentials belong in the API key, not the URL"));
    }
    if uri.query().is_some() {
        return Err(fail("a query string is not allowed"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert_eq!(check_url("http://h:9000/").unwrap(), "http://h:9000");
        assert_eq!(
            check_url("https://h/portainer/").unwrap(),
            "https://h/portainer"
        );
        for bad in ["h:9000", "ftp://h", "http://h/?a=b", "not a url", "http://"] {
            assert!(check_url(bad).is_err(), "{bad} accepted");
        }
        let err = check_url("http://user:secret@h/").unwrap_err().to_string();
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn messages_come_from_portainer_json_or_an_excerpt() {
        assert_eq!(
            error_message(br#"{"message":"Invalid JWT token","details":"Unauthorized"}"#),
            "Invalid JWT token (Unauthorized)"
        );
        assert_eq!(error_message(br#"{"message":"m","details":"m"}"#), "m");
        assert_eq!(
            error_message(b"<html>bad gateway</html>"),
            "<html>bad gateway</html>"
        );
        assert_eq!(error_message(b""), "");
    }

    #[test]
    fn debug_hides_the_key() {
        let client = Client::new("http://localhost:9000", "ptr_topsecret").unwrap();
        let shown = format!(
            "{client:?} {:?}",
            Client::builder("http://x").api_key("ptr_topsecret")
        );
        assert!(!shown.contains("topsecret"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn debug_hides_the_password_and_proxy_credentials() {
        let builder = Client::builder("http://localhost:9000")
            .login("admin", "hunter2")
            .proxy("http://user:proxy-pw@127.0.0.1:3128");
        let client = builder.clone().build().unwrap();
        let shown = format!("{builder:?} {client:?}");
        for secret in ["hunter2", "proxy-pw"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("admin"), "{shown}");
    }

    #[test]
    fn engines_use_the_root_and_have_one_endpoint() {
        let client = Client::docker_socket("/run/docker.sock").unwrap();
        assert!(client.is_docker_engine());
        assert_eq!(client.url(), "unix:///run/docker.sock");
        assert_eq!(
            client.docker_url(0, "/events").unwrap(),
            "http://localhost/events"
        );
        assert!(matches!(
            client.docker_url(1, "/events"),
            Err(Error::NotFound { .. })
        ));
        let portainer = Client::new("https://h/portainer", "k").unwrap();
        assert_eq!(
            portainer.docker_url(3, "/events").unwrap(),
            "https://h/portainer/api/endpoints/3/docker/events"
        );
    }

    #[test]
    fn bad_keys_are_refused_without_echoing_them() {
        let err = Client::new("http://h", "ptr bad\nkey")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("ptr"), "{err}");
    }
}
