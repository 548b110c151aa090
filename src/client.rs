//! The blocking client: endpoint list, event stream and bounded event windows.

use std::fmt;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use ureq::Agent;
use ureq::http::{Response, Uri};
use ureq::unversioned::resolver::DefaultResolver;

use crate::endpoint::Endpoint;
use crate::error::{Error, excerpt};
use crate::event::DockerEvent;
use crate::query::{EventQuery, Timestamp};
use crate::stream::EventStream;
use crate::transport::{self, Cancel, Keepalive};

/// The default timeout of ordinary calls, and of connecting and receiving
/// response headers for streams.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The default maximum length of one line of the event stream: 1 MiB.
/// Docker's events are well under 10 KiB.
pub const DEFAULT_MAX_LINE_LENGTH: usize = 1024 * 1024;

/// The most of an error body read to find Portainer's message.
const ERROR_BODY_LIMIT: u64 = 64 * 1024;

/// The most of an endpoint list read into memory.
const LIST_BODY_LIMIT: u64 = 32 * 1024 * 1024;

/// A blocking client for Portainer's API.
///
/// Cheap to clone: clones share one connection pool and configuration.
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
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    base: String,
    api_key: Option<String>,
    timeout: Duration,
    keepalive: Option<Keepalive>,
    max_line_length: usize,
    agent: Agent,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.inner.base)
            .field(
                "api_key",
                &self.inner.api_key.as_ref().map(|_| "<redacted>"),
            )
            .field("timeout", &self.inner.timeout)
            .field("keepalive", &self.inner.keepalive)
            .field("max_line_length", &self.inner.max_line_length)
            .finish()
    }
}

/// Settings for a [`Client`]; made by [`Client::builder`].
#[derive(Clone)]
pub struct ClientBuilder {
    url: String,
    api_key: Option<String>,
    timeout: Duration,
    keepalive: Option<Keepalive>,
    max_line_length: usize,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("url", &redact_url(&self.url))
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("keepalive", &self.keepalive)
            .field("max_line_length", &self.max_line_length)
            .finish()
    }
}

impl ClientBuilder {
    /// The API key, sent as the `X-API-Key` header on every request.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
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
    /// about a minute.
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

    /// Checks the URL and makes the client.
    pub fn build(self) -> Result<Client, Error> {
        let base = check_url(&self.url)?;
        if let Some(key) = &self.api_key {
            if key.is_empty() || key.bytes().any(|b| b.is_ascii_control() || b == b' ') {
                return Err(Error::Config(
                    "the API key is empty or holds spaces or control characters".into(),
                ));
            }
        }
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .user_agent(concat!("portainer-rs/", env!("CARGO_PKG_VERSION")))
            .timeout_global(Some(self.timeout))
            .build();
        let agent = Agent::with_parts(
            config,
            transport::connector(None, None),
            DefaultResolver::default(),
        );
        Ok(Client {
            inner: Arc::new(Inner {
                base,
                api_key: self.api_key,
                timeout: self.timeout,
                keepalive: self.keepalive,
                max_line_length: self.max_line_length,
                agent,
            }),
        })
    }
}

/// Portainer's error body.
#[derive(Deserialize)]
struct ErrorBody {
    message: Option<String>,
    details: Option<String>,
}

impl Client {
    /// A client for the Portainer at `url` (a base path such as
    /// `https://host/portainer` works) using `api_key`.
    pub fn new(url: &str, api_key: &str) -> Result<Client, Error> {
        Client::builder(url).api_key(api_key).build()
    }

    /// Settings for a client of the Portainer at `url`, with defaults.
    pub fn builder(url: &str) -> ClientBuilder {
        ClientBuilder {
            url: url.to_string(),
            api_key: None,
            timeout: DEFAULT_TIMEOUT,
            keepalive: Some(Keepalive::default()),
            max_line_length: DEFAULT_MAX_LINE_LENGTH,
        }
    }

    /// The Portainer URL, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.inner.base
    }

    /// Portainer's endpoints (`GET /api/endpoints`).
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
        let url = format!("{}/api/endpoints", self.inner.base);
        let response = self.authorize(agent.get(&url)).call()?;
        let mut response = check_status(response)?;
        let body = response
            .body_mut()
            .with_config()
            .limit(LIST_BODY_LIMIT)
            .read_to_vec()?;
        serde_json::from_slice(&body).map_err(|err| Error::decode(err, &body))
    }

    /// Follows the events of one endpoint as they happen
    /// (`GET /api/endpoints/{id}/docker/events`).
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
        let url = format!(
            "{}/api/endpoints/{endpoint_id}/docker/events",
            self.inner.base
        );
        let agent = self.cancellable_agent(cancel.clone(), None);
        let mut request = self.authorize(agent.get(&url));
        for (key, value) in query.params() {
            request = request.query(key, value);
        }
        let response = check_status(request.call()?)?;
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

    /// An agent of its own for one request: its connector hands the socket
    /// to `cancel`. Connecting and receiving the response headers have the
    /// client's timeout; the body has `body_timeout` (none for a stream).
    fn cancellable_agent(&self, cancel: Arc<Cancel>, body_timeout: Option<Duration>) -> Agent {
        let timeout = Some(self.inner.timeout);
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .user_agent(concat!("portainer-rs/", env!("CARGO_PKG_VERSION")))
            .timeout_global(body_timeout)
            .timeout_resolve(timeout)
            .timeout_connect(timeout)
            .timeout_send_request(timeout)
            .timeout_recv_response(timeout)
            .timeout_recv_body(body_timeout)
            .max_idle_connections(0)
            .build();
        Agent::with_parts(
            config,
            transport::connector(self.inner.keepalive, Some(cancel)),
            DefaultResolver::default(),
        )
    }

    fn authorize<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.inner.api_key {
            Some(key) => request.header("X-API-Key", key),
            None => request,
        }
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

/// The URL with anything before an `@` in its authority hidden.
fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://<redacted>@{host}{path}"),
        None => url.to_string(),
    }
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
    fn bad_keys_are_refused_without_echoing_them() {
        let err = Client::new("http://h", "ptr bad\nkey")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("ptr"), "{err}");
    }
}
