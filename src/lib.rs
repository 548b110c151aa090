//! Follow Docker events through [Portainer]'s API in real time, from plain
//! threads: no async runtime anywhere in the dependency tree.
//!
//! The crate does for Rust what the Python package pyportainer's
//! `PortainerEventListener`, `get_events` and `get_recent_events` do: a
//! blocking [`Client`] for one-off calls and streams, and a [`Listener`] that
//! follows one or every endpoint on background threads and hands each event to
//! callbacks and channel subscribers. A Docker Engine reached directly, with
//! no Portainer, works as a source too.
//!
//! [Portainer]: https://www.portainer.io
//!
//! # Example
//!
//! ```no_run
//! use portainer::{Client, Listener};
//!
//! fn main() -> Result<(), portainer::Error> {
//!     let client = Client::new("https://portainer.example.com:9443", "ptr_xxx")?;
//!     let listener = Listener::builder(client).event_types(["container"]).build();
//!     let events = listener.subscribe();
//!     listener.start()?;
//!     for result in events {
//!         let event = &result.event;
//!         println!(
//!             "endpoint {}: {} {}",
//!             result.endpoint_id,
//!             event.action().unwrap_or("?"),
//!             event.attribute("name").unwrap_or("?"),
//!         );
//!     }
//!     Ok(())
//! }
//! ```
//!
//! # Usage
//!
//! - [`Client::endpoints`] lists Portainer's endpoints (environments).
//! - [`Client::events`] opens one endpoint's event stream as a blocking
//!   iterator; [`EventQuery`] carries `since`, `until` and Docker's
//!   [`EventFilters`]. Times are [`Timestamp`]s and go to Docker as
//!   `SECONDS.NANOSECONDS`, keeping nanosecond precision.
//! - [`Client::recent_events`] returns a bounded window as a `Vec`.
//! - [`Listener`] follows every endpoint with a Docker API (or one), with one
//!   reader thread per endpoint and one dispatcher thread that calls the
//!   callbacks ([`Listener::register_callback`]) and feeds the channels of
//!   [`Listener::subscribe`]. It reconnects dropped streams and resumes them
//!   after the last event delivered, so a reconnect neither loses nor repeats
//!   events while the daemon still holds them. [`Listener::status`] tells where
//!   each endpoint stands.
//!
//! # Sources, TLS, login and proxies
//!
//! - Portainer: [`Client::new`] with an API key, or [`Client::builder`] with
//!   [`login`](ClientBuilder::login) (username and password; an expired token
//!   is renewed once, inside the client, and the request repeated).
//! - A Docker Engine: [`Client::docker_socket`], [`Client::from_docker_env`]
//!   (`DOCKER_HOST`, `DOCKER_TLS_VERIFY`, `DOCKER_CERT_PATH`, as the docker
//!   CLI reads them; default [`DEFAULT_DOCKER_HOST`]) or
//!   [`Client::docker_builder`]. It appears as one endpoint,
//!   [`ENGINE_ENDPOINT_ID`] (0), of type [`EndpointType::Docker`]; events,
//!   windows and the listener work on it unchanged.
//! - TLS: Mozilla's roots by default; [`ClientBuilder::ca_file`] for a
//!   private CA or a self-signed certificate; [`ClientBuilder::client_certificate`];
//!   and the explicit, dangerous [`ClientBuilder::danger_accept_invalid_certs`],
//!   never on by default.
//! - Proxies: from `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` and `NO_PROXY`
//!   by default, or [`ClientBuilder::proxy`], [`ClientBuilder::proxy_bypass`]
//!   and [`ClientBuilder::without_proxy`]. Never for a unix socket, nor (from
//!   the environment) for loopback addresses.
//!
//! ```no_run
//! use portainer::{Client, Listener};
//!
//! # fn main() -> Result<(), portainer::Error> {
//! let client = Client::from_docker_env()?;
//! let listener = Listener::builder(client).build(); // endpoint 0: the engine
//! listener.start()?;
//! # Ok(())
//! # }
//! ```
//!
//! # Errors
//!
//! Every fallible call returns [`Error`]. Server replies keep their HTTP
//! status and Portainer's message; [`Error::is_final`] tells a refusal that
//! retrying cannot fix (401, 403, 404) from a passing failure. The API key,
//! the password and the login token are never part of an error, a `Debug`
//! output or a log line.
//!
//! # Logging
//!
//! The crate logs through the [`log`] facade and never installs a logger:
//!
//! - `error`: an endpoint given up for good (401, 403, 404), a callback that
//!   panicked;
//! - `warn`: the first failure of a kind on an endpoint (its repeats go to
//!   `debug`), a skipped malformed or overlong line, events dropped because a
//!   queue was full;
//! - `info`: a stream open again after failures, an endpoint skipped because
//!   it has no Docker API;
//! - `debug`: connections opened and closed, logins, and with
//!   [`ListenerBuilder::debug`] every event delivered.
//!
//! Building a client that accepts invalid certificates logs a `warn`, as does
//! a SOCKS proxy from the environment, which is ignored.
//!
//! # Under faults
//!
//! The listener is meant to run for months:
//!
//! - **No event lost or repeated across a reconnect.** A new connection asks
//!   for `since` = the `timeNano` of the last event delivered, and drops the
//!   events of that nanosecond it already delivered (the daemon replays
//!   inclusively). A stream that ends cleanly without `until` counts as a drop.
//! - **Reconnects** wait the reconnect interval, then double up to a minute
//!   with jitter; the wait starts over once a stream has delivered an event or
//!   stayed up for an interval. Network errors, TLS failures (an untrusted
//!   certificate too: it can be fixed on the server), 5xx and HTML pages
//!   behind a 200 are retried, each kind warned about once; 401, 403 and
//!   404 end the endpoint for good. Reading the endpoint list in
//!   [`Listener::start`] is not retried: its failure is `start`'s error.
//! - **Stopping** shuts down every socket, wakes every wait and joins every
//!   thread; it is safe from inside a callback.
//! - **Dead connections**: every stream socket has TCP keepalive
//!   ([`Keepalive`]: a vanished peer is noticed in about a minute). An idle
//!   but healthy stream is never cut, and no timeout applies to a stream body.
//! - **Bounded memory**: a line longer than
//!   [`ClientBuilder::max_line_length`] is reported and skipped; a slow
//!   callback never stops the readers from draining their sockets (Docker
//!   drops events for a client that lags about 100 ms); past
//!   [`ListenerBuilder::queue_capacity`] queued events, new ones are dropped
//!   and counted in [`StreamStatus::events_dropped`].
//! - **Endpoint changes** are picked up by reading the list again
//!   ([`ListenerBuilder::endpoint_refresh`]).
//! - **Status**: [`Listener::status`] and [`Listener::subscribe_status`] tell
//!   each endpoint's state and counters.
//!
//! # Known problems
//!
//! - The daemon keeps only its last 256 events, and none across its own
//!   restart: a gap longer than that cannot be replayed, and the listener
//!   resumes from what is left. [`Listener::subscribe_status`] shows the
//!   gap (a `Waiting` state, then `Streaming`), so a program can list its
//!   containers again.
//! - [`Listener::stop`] does not interrupt a connection attempt in progress;
//!   it waits for it to finish, at most the client's timeout. On loopback
//!   and healthy networks that is immediate. A login made while it runs is
//!   not interrupted either.
//! - Two events the daemon publishes out of timestamp order around a
//!   disconnect can lose the older one: the resume point is the newest.
//! - Proxies are HTTP(S) only, not SOCKS, and every request is tunnelled with
//!   `CONNECT`, also for `http://` URLs: a proxy that allows `CONNECT` only to
//!   port 443 refuses a Portainer on `http://host:9000`.
//! - A Docker Engine is reached by `unix://` or `tcp://` only (no `ssh://`,
//!   no Windows named pipes, no docker contexts). `DOCKER_TLS` without
//!   `DOCKER_TLS_VERIFY` turns TLS on but, unlike the docker CLI, still
//!   verifies the daemon's certificate.
//! - On an event stream, the response head must fit in 8 KiB: the buffer is
//!   kept small so that a listener with many idle streams stays light.
//!
//! # Minimum Rust version
//!
//! Rust 1.85 (edition 2024).

#![forbid(unsafe_code)]
#![deny(missing_docs, missing_debug_implementations)]

mod auth;
mod client;
mod endpoint;
mod engine;
mod error;
mod event;
mod lines;
mod listener;
mod proxy;
mod query;
mod stream;
mod tls;
mod transport;

pub use client::{Client, ClientBuilder, DEFAULT_MAX_LINE_LENGTH, DEFAULT_TIMEOUT};
pub use endpoint::{Endpoint, EndpointStatus, EndpointType};
pub use engine::{DEFAULT_DOCKER_HOST, ENGINE_ENDPOINT_ID};
pub use error::Error;
pub use event::{DockerEvent, DockerEventActor};
pub use listener::{
    Callback, CallbackId, DEFAULT_ENDPOINT_REFRESH, DEFAULT_QUEUE_CAPACITY,
    DEFAULT_RECONNECT_INTERVAL, Listener, ListenerBuilder, ListenerResult, StreamState,
    StreamStatus,
};
pub use query::{EventFilters, EventQuery, ParseTimestampError, Timestamp};
pub use stream::{EventStream, StreamCanceller};
pub use transport::Keepalive;

/// The README's examples, compiled as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;
