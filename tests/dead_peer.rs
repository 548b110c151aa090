//! A peer that vanishes without closing the connection (a host powered off,
//! a NAT entry dropped) leaves the stream silent for ever unless TCP
//! keepalive notices. The vanishing is made real with a firewall rule that
//! drops the server's packets of one connection, so these tests need root
//! and iptables; CI has both.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use crossbeam_channel::unbounded;
use parking_lot::Mutex;
use portainer::{Client, Keepalive, Listener, StreamState};

use common::{PATIENCE, TestServer, event_line};

const T0: i64 = 1_700_000_000_000_000_000;

fn iptables(action: &str, server_port: u16, client_port: u16) -> bool {
    Command::new("iptables")
        .args([action, "INPUT", "-i", "lo", "-p", "tcp"])
        .args([
            "--sport",
            &server_port.to_string(),
            "--dport",
            &client_port.to_string(),
        ])
        .args(["-j", "DROP"])
        .status()
        .is_ok_and(|s| s.success())
}

/// Drops every packet the server sends on one connection while it lives.
struct Blackhole {
    server_port: u16,
    client_port: u16,
}

impl Blackhole {
    fn new(server_port: u16, client_port: u16) -> Blackhole {
        assert!(
            iptables("-I", server_port, client_port),
            "iptables refused the rule"
        );
        Blackhole {
            server_port,
            client_port,
        }
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        iptables("-D", self.server_port, self.client_port);
    }
}

fn firewall_available() -> bool {
    let usable = Command::new("iptables")
        .args(["-L", "INPUT", "-n"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !usable {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must provide root and iptables"
        );
        eprintln!("skipping: iptables is not usable here (needs root)");
    }
    usable
}

/// A server whose first connection sends one event and then goes silent;
/// later connections send `second`. The first connection's client port
/// arrives on the returned channel.
fn server() -> (TestServer, crossbeam_channel::Receiver<u16>) {
    let (ports, port) = unbounded();
    let ports = Mutex::new(ports);
    let server = TestServer::start(move |conn| {
        conn.start_chunked("application/json");
        if conn.index == 0 {
            conn.chunk(format!("{}\n", event_line("start", "first", T0 + 1)).as_bytes());
            let _ = ports.lock().send(conn.stream.peer_addr().unwrap().port());
        } else {
            conn.chunk(format!("{}\n", event_line("start", "second", T0 + 2)).as_bytes());
        }
        conn.hold();
    });
    (server, port)
}

fn listener(url: &str) -> Listener {
    let keepalive = Keepalive {
        idle: Duration::from_secs(1),
        interval: Duration::from_secs(1),
        retries: 2,
    };
    let client = Client::builder(url)
        .api_key("k")
        .keepalive(Some(keepalive))
        .build()
        .unwrap();
    Listener::builder(client)
        .endpoint(1)
        .reconnect_interval(Duration::from_millis(100))
        .build()
}

fn server_port(server: &TestServer) -> u16 {
    server.url().rsplit(':').next().unwrap().parse().unwrap()
}

/// A listener that got the first event, after which its peer went silent.
struct Silenced {
    listener: Listener,
    events: crossbeam_channel::Receiver<portainer::ListenerResult>,
    _hole: Blackhole,
    _server: TestServer,
}

fn silenced() -> Silenced {
    let (server, client_port) = server();
    let listener = listener(&server.url());
    let events = listener.subscribe();
    listener.start().unwrap();
    let first = events.recv_timeout(PATIENCE).unwrap();
    assert_eq!(first.event.actor_id(), Some("first"));
    let port = client_port.recv_timeout(PATIENCE).unwrap();
    let hole = Blackhole::new(server_port(&server), port);
    Silenced {
        listener,
        events,
        _hole: hole,
        _server: server,
    }
}

#[test]
fn a_vanished_peer_is_noticed_and_the_stream_replaced() {
    if !firewall_available() {
        return;
    }
    let silenced = silenced();
    // Keepalive gives up after about 1 + 2 × 1 s; the default would take a minute.
    let next = silenced
        .events
        .recv_timeout(Duration::from_secs(60))
        .expect("the stream to be replaced");
    assert_eq!(next.event.actor_id(), Some("second"));
    assert!(silenced.listener.status()[0].reconnects >= 1);
    silenced.listener.stop();
}

#[test]
fn stop_is_prompt_while_the_peer_is_silent() {
    if !firewall_available() {
        return;
    }
    let silenced = silenced();
    assert_eq!(silenced.listener.status()[0].state, StreamState::Streaming);
    let started = Instant::now();
    silenced.listener.stop();
    assert!(
        started.elapsed() < PATIENCE,
        "stop took {:?}",
        started.elapsed()
    );
}
