//! Prints the Docker events of every endpoint of a Portainer (or of one) as
//! they happen, like `docker events` does for a single daemon. Without a
//! Portainer URL it follows the local Docker Engine (`DOCKER_HOST`, or
//! `/var/run/docker.sock`), as endpoint 0.
//!
//! ```text
//! cargo run --example listen
//! cargo run --example listen -- --url https://portainer:9443 --api-key ptr_xxx
//! cargo run --example listen -- --url https://portainer:9443 --ca-file ca.pem --username admin
//! cargo run --example listen -- --endpoint 1 --type container --json
//! cargo run --example listen -- --since 2026-12-03T10:00:00Z --until 1796300800.5
//! ```
//!
//! The first line on stderr says which source it follows. Events go to
//! stdout; warnings and errors go to stderr (`RUST_LOG` overrides the
//! default filter). Ctrl-C stops the listener and exits 0; with `--until`,
//! the program exits 0 once every endpoint's window is complete, and 1 when
//! some endpoint's could not be read. When every endpoint has ended for good
//! (bad key, forbidden, deleted) it says so and exits 1.

use std::error::Error;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use crossbeam_channel::select;
use portainer::{Client, Listener, ListenerResult, StreamState, Timestamp};

/// Follow Docker events through Portainer's API, or of the local Docker Engine.
#[derive(Debug, Parser)]
#[command(name = "listen")]
struct Args {
    /// Portainer's URL, such as https://portainer.example.com:9443; without
    /// it, the Docker Engine of DOCKER_HOST (default unix:///var/run/docker.sock)
    #[arg(long, env = "PORTAINER_URL")]
    url: Option<String>,

    /// An API key made in Portainer (My account > Access tokens)
    #[arg(long, env = "PORTAINER_API_KEY", hide_env_values = true)]
    api_key: Option<String>,

    /// Log in to Portainer as this user instead of using an API key
    #[arg(long, env = "PORTAINER_USERNAME")]
    username: Option<String>,

    /// The password for --username (prefer the variable: a flag shows in `ps`)
    #[arg(long, env = "PORTAINER_PASSWORD", hide_env_values = true)]
    password: Option<String>,

    /// Trust the certificates of this PEM file instead of the built-in roots
    #[arg(long, value_name = "PEM_FILE")]
    ca_file: Option<PathBuf>,

    /// DANGEROUS: accept any server certificate (Portainer's self-signed one on
    /// 9443, for example); anyone on the path can then read the key or password
    #[arg(long)]
    insecure: bool,

    /// Send requests through this HTTP proxy (default: HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY)
    #[arg(long, value_name = "URL")]
    proxy: Option<String>,

    /// Follow only this endpoint (default: every endpoint with a Docker API)
    #[arg(long)]
    endpoint: Option<u64>,

    /// Keep only events of this type (container, image, network, volume, ...); repeatable
    #[arg(long = "type", value_name = "TYPE")]
    types: Vec<String>,

    /// Start with the events since TIME: Unix seconds (fractions allowed) or RFC 3339
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    since: Option<Timestamp>,

    /// Stop at TIME and exit once every endpoint's window is complete
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    until: Option<Timestamp>,

    /// Seconds to wait before reconnecting a dropped stream
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    reconnect_interval: f64,

    /// Print one JSON object per line: {"endpoint_id": N, "event": {...}}
    #[arg(long)]
    json: bool,

    /// Log the listener's work, and every event, at debug level
    #[arg(long)]
    debug: bool,
}

/// Reads Unix seconds with an optional fraction, or an RFC 3339 time.
fn parse_time(text: &str) -> Result<Timestamp, String> {
    if let Ok(time) = text.parse::<Timestamp>() {
        return Ok(time);
    }
    let time: jiff::Timestamp = text
        .parse()
        .map_err(|_| format!("{text:?} is neither Unix seconds nor an RFC 3339 time"))?;
    let nanos =
        i64::try_from(time.as_nanosecond()).map_err(|_| format!("{text:?} is out of range"))?;
    Ok(Timestamp::from_unix_nanos(nanos))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let default_filter = if args.debug {
        "warn,portainer=debug"
    } else {
        "warn,portainer=info"
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_filter))
        .target(env_logger::Target::Stderr)
        // ureq's own logs are noise here, and its trace level dumps raw
        // requests, API key included: warnings only, whatever RUST_LOG says.
        .filter_module("ureq", log::LevelFilter::Warn)
        .filter_module("ureq_proto", log::LevelFilter::Warn)
        .init();
    match run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("listen: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<ExitCode, Box<dyn Error>> {
    let interval = Duration::try_from_secs_f64(args.reconnect_interval)
        .map_err(|_| "--reconnect-interval must be a number of seconds")?;
    let client = client(&args)?;
    let source = match client.is_docker_engine() {
        true => "the Docker Engine",
        false => "Portainer",
    };
    eprintln!("listen: on {source} at {}", client.url());
    let mut builder = Listener::builder(client)
        .endpoint(args.endpoint)
        .reconnect_interval(interval)
        .debug(args.debug);
    if !args.types.is_empty() {
        builder = builder.event_types(args.types.iter().cloned());
    }
    if let Some(since) = args.since {
        builder = builder.since(since);
    }
    if let Some(until) = args.until {
        builder = builder.until(until);
    }
    let listener = builder.build();
    let events = listener.subscribe();

    let (interrupt, interrupted) = crossbeam_channel::bounded(1);
    ctrlc::set_handler(move || {
        let _ = interrupt.try_send(());
    })?;

    listener.start()?;
    let ids: Vec<String> = listener
        .status()
        .iter()
        .map(|s| s.endpoint_id.to_string())
        .collect();
    if ids.is_empty() {
        eprintln!("listen: no endpoint with a Docker API yet; waiting for one to be added");
    } else {
        eprintln!("listen: following endpoint(s) {}", ids.join(", "));
    }

    let mut out = io::stdout().lock();
    loop {
        select! {
            recv(events) -> message => match message {
                Ok(result) => {
                    if let Err(err) = print(&mut out, &result, args.json) {
                        listener.stop();
                        // A closed pipe (`listen | head`) is a normal way to finish.
                        if err.kind() == io::ErrorKind::BrokenPipe {
                            return Ok(ExitCode::SUCCESS);
                        }
                        return Err(err.into());
                    }
                }
                Err(_) => break,
            },
            recv(interrupted) -> _ => {
                listener.stop();
                eprintln!("listen: stopped");
                return Ok(ExitCode::SUCCESS);
            }
        }
    }

    // Every endpoint's reader has ended: windows complete, or failures.
    listener.stop();
    let statuses = listener.status();
    let mut failed = 0;
    for status in &statuses {
        if let StreamState::Failed { reason, .. } = &status.state {
            eprintln!("listen: endpoint {} ended: {reason}", status.endpoint_id);
            failed += 1;
        }
    }
    if failed == statuses.len() {
        eprintln!("listen: every endpoint has ended for good");
        return Ok(ExitCode::FAILURE);
    }
    if failed > 0 {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The client for Portainer (with its key or login) or, without a URL, for
/// the Docker Engine the environment names.
fn client(args: &Args) -> Result<Client, Box<dyn Error>> {
    let mut builder = match &args.url {
        None => Client::docker_env_builder(),
        Some(url) => {
            let builder = Client::builder(url);
            match (&args.api_key, &args.username, &args.password) {
                (Some(_), Some(_), _) => {
                    return Err("give an API key (--api-key or PORTAINER_API_KEY) or \
                                --username, not both"
                        .into());
                }
                (Some(key), None, _) => builder.api_key(key),
                (None, Some(username), Some(password)) => builder.login(username, password),
                (None, Some(_), None) => {
                    return Err("--username needs --password (or PORTAINER_PASSWORD)".into());
                }
                (None, None, _) => {
                    return Err("Portainer needs --api-key, or --username and --password \
                                (or PORTAINER_API_KEY, PORTAINER_USERNAME, PORTAINER_PASSWORD)"
                        .into());
                }
            }
        }
    };
    if let Some(ca_file) = &args.ca_file {
        builder = builder.ca_file(ca_file);
    }
    if args.insecure {
        builder = builder.danger_accept_invalid_certs(true);
    }
    if let Some(proxy) = &args.proxy {
        builder = builder.proxy(proxy);
    }
    Ok(builder.build()?)
}

/// One line per event: JSON, or the layout of `docker events`.
fn print(out: &mut impl Write, result: &ListenerResult, json: bool) -> io::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, result)?;
        return writeln!(out);
    }
    let event = &result.event;
    let time = event
        .timestamp_nanos()
        .and_then(|nanos| jiff::Timestamp::from_nanosecond(i128::from(nanos)).ok())
        .map(|t| format!("{t:.9}"))
        .unwrap_or_else(|| "-".into());
    let attributes = event
        .actor()
        .map(|actor| {
            actor
                .attributes()
                .map(|(key, value)| format!("{key}={value}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    writeln!(
        out,
        "{time} endpoint={} {} {} {} ({attributes})",
        result.endpoint_id,
        event.kind().unwrap_or("-"),
        event.action().unwrap_or("-"),
        event.actor_id().unwrap_or("-"),
    )
}
