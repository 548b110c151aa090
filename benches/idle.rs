//! Scenario **idle cost**: the CPU time the process spends over 10 s with
//! 100 endpoints whose streams are open and silent, and the resident memory
//! with 1,000 of them. The server runs in a child process (this program
//! started again with `--serve`) so that only the listener is measured. A
//! plain program rather than a criterion bench: the figures are totals over
//! a fixed time, not times per iteration.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use portainer::{Client, Listener, StreamState};
use support::Server;

fn endpoint_list(count: usize) -> String {
    let items: Vec<String> = (1..=count)
        .map(|id| format!(r#"{{"Id":{id},"Name":"e{id}","Type":1}}"#))
        .collect();
    format!("[{}]", items.join(","))
}

/// In the child: serve `count` silent streams until stdin closes.
fn serve(count: usize) {
    let head =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    let server = Server::start(head, endpoint_list(count), true);
    println!("{}", server.url());
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}

fn start_server(count: usize) -> (Child, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--serve", &count.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut url = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut url)
        .unwrap();
    (child, url.trim().to_string())
}

fn stop_server(mut child: Child) {
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
}

/// user + system CPU time of this process so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of the line, counted in clock ticks.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn streaming_listener(url: &str, count: usize) -> Listener {
    let listener = Listener::builder(Client::new(url, "bench").unwrap()).build();
    listener.start().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = listener.status();
        if status.len() == count && status.iter().all(|s| s.state == StreamState::Streaming) {
            return listener;
        }
        assert!(Instant::now() < deadline, "streams did not open");
        thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if let Some(pos) = args.iter().position(|a| a == "--serve") {
        serve(args[pos + 1].parse().unwrap());
        return;
    }

    let (child, url) = start_server(100);
    let listener = streaming_listener(&url, 100);
    let before = cpu_time();
    thread::sleep(Duration::from_secs(10));
    let spent = cpu_time() - before;
    println!("idle cpu: 100 idle endpoints for 10 s used {spent:?} of CPU");
    listener.stop();
    stop_server(child);

    let baseline = rss_kib();
    let (child, url) = start_server(1000);
    let listener = streaming_listener(&url, 1000);
    let rss = rss_kib();
    println!(
        "idle rss: 1000 idle endpoints, resident {:.1} MiB ({:.1} MiB before starting)",
        rss as f64 / 1024.0,
        baseline as f64 / 1024.0
    );
    listener.stop();
    stop_server(child);
}
