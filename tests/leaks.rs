//! File descriptors and threads across many start/stop cycles and many
//! reconnects. Alone in its test binary: the counts are process-wide, so no
//! other test may run beside it.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use portainer::{Client, Listener};

use common::{event_line, portainer};

const KEY: &str = "ptr_leak_test_key";
const T0: i64 = 1_700_000_000_000_000_000;

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn tasks() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn no_fd_or_thread_leaks_over_cycles_and_reconnects() {
    let base_fds = fds();
    let base_tasks = tasks();
    {
        let server = portainer(
            r#"[{"Id":1,"Name":"a","Type":1,"Status":1,"URL":"x"},{"Id":2,"Name":"b","Type":1,"Status":1,"URL":"x"}]"#,
            |conn| {
                conn.start_chunked("application/json");
                conn.chunk(
                    format!("{}\n", event_line("start", "a", T0 + conn.index as i64)).as_bytes(),
                );
                conn.hold();
            },
        );
        let listener = Listener::builder(Client::new(&server.url(), KEY).unwrap())
            .reconnect_interval(Duration::from_millis(1))
            .build();
        for _ in 0..30 {
            listener.start().unwrap();
            thread::sleep(Duration::from_millis(20));
            listener.stop();
        }
    }
    // churn: a plain server that ends each stream after one event, keeping no sockets
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap();
    let stop_srv = Arc::new(AtomicBool::new(false));
    let ss = stop_srv.clone();
    let srv = thread::spawn(move || {
        let mut i = 0i64;
        for s in tcp.incoming() {
            if ss.load(Ordering::SeqCst) {
                break;
            }
            let mut s = s.unwrap();
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut s, &mut buf);
            i += 1;
            let line = format!("{}\n", event_line("start", &format!("c{i}"), T0 + i));
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{line}",
                line.len()
            );
        }
    });
    let churn_base = fds();
    let listener = Listener::builder(Client::new(&format!("http://{addr}"), KEY).unwrap())
        .endpoint(1)
        .reconnect_interval(Duration::from_millis(1))
        .build();
    listener.start().unwrap();
    thread::sleep(Duration::from_secs(2));
    let mid_fds = fds();
    let reconnects = listener.status()[0].reconnects;
    listener.stop();
    stop_srv.store(true, Ordering::SeqCst);
    let _ = std::net::TcpStream::connect(addr);
    srv.join().unwrap();
    thread::sleep(Duration::from_millis(200));
    let (f, t) = (fds(), tasks());
    println!(
        "fds {base_fds} -> churn base {churn_base} -> mid {mid_fds} -> {f}; tasks {base_tasks} -> {t}; reconnects {reconnects}"
    );
    assert!(
        f <= base_fds + 1 && mid_fds <= churn_base + 4,
        "fds {base_fds} -> {f}"
    );
    assert!(t <= base_tasks, "threads {base_tasks} -> {t}");
}
