//! Clients that read slowly, read nothing, half-close, flood the slots or arrive when the
//! daemon is out of file descriptors: each gets what it asked for, or is cut off by a timer,
//! and never takes what the other clients need.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::client::{post_request, sse_data};
use common::{write_model, Client, Daemon, TempDir};
use serde_json::{json, Value};

/// Generous: this machine is shared and noisy.
const EVENTUALLY: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fast model whose every answer is `tokens` long.
fn long_model(dir: &TempDir, tokens: u32) -> std::path::PathBuf {
    let n = format!("{tokens}");
    write_model(
        dir.path(),
        "long",
        &[
            &format!("answer_tokens_min = {n}"),
            &format!("answer_tokens_max = {n}"),
        ],
    )
}

/// A chat request that closes its connection after the answer.
fn closing_chat(stream: bool) -> Vec<u8> {
    let body = json!({"stream": stream, "messages": [{"role": "user", "content": "hi"}]});
    let raw = post_request("/v1/chat/completions", &body);
    let text = String::from_utf8(raw).unwrap();
    text.replacen("\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1)
        .into_bytes()
}

/// Reads until the daemon closes; a reset ends it too.
fn read_to_close(c: &mut Client) -> Vec<u8> {
    let mut all = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        match c.conn.read(&mut chunk) {
            Ok(0) | Err(_) => return all,
            Ok(n) => all.extend_from_slice(&chunk[..n]),
        }
    }
}

fn health(d: &Daemon) -> Option<Value> {
    let mut c = d.client();
    c.send_raw(b"GET /health HTTP/1.1\r\n\r\n");
    c.read_response_or_close()
        .filter(|r| r.status == 200)
        .map(|r| r.json())
}

/// Splits a raw response into its head and body (de-chunked when chunked).
fn split_response(raw: &[u8]) -> (String, Vec<u8>) {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {} bytes", raw.len()));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut rest = &raw[end + 4..];
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return (head, rest.to_vec());
    }
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size line");
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap(), 16)
            .expect("a chunk size");
        rest = &rest[line_end + 2..];
        if size == 0 {
            return (head, body);
        }
        let Some(chunk) = rest.get(..size) else {
            panic!("the stream ends inside a chunk after {} bytes", body.len());
        };
        body.extend_from_slice(chunk);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
}

// ---- finding 10: a half-close is not a hangup -----------------------------------------------

/// Sends a `Connection: close` request, shuts down the write side at once (as `nc -N` does)
/// and reads to the end: the whole answer must be there, each of 5 times.
fn half_closed_requests_get_whole_answers(d: &Daemon, connect: impl Fn() -> Client) {
    for round in 0..5 {
        let stream = round % 2 == 1;
        let mut c = connect();
        c.send_raw(&closing_chat(stream));
        c.conn_shutdown_write();
        let raw = read_to_close(&mut c);
        let (head, body) = split_response(&raw);
        assert!(head.starts_with("HTTP/1.1 200"), "round {round}: {head}");
        assert!(body.len() > 300_000, "round {round}: {} bytes", body.len());
        let tokens = if stream {
            let events = sse_data(&body);
            assert_eq!(
                events.last().map(String::as_str),
                Some("[DONE]"),
                "round {round}"
            );
            events.iter().filter(|e| e.contains("\"content\"")).count()
        } else {
            let v: Value = serde_json::from_slice(&body).expect("a whole JSON answer");
            assert_eq!(v["choices"][0]["finish_reason"], "stop", "round {round}");
            usize::try_from(v["usage"]["completion_tokens"].as_u64().unwrap()).unwrap()
        };
        assert!(tokens >= 80_000, "round {round}: {tokens} tokens");
    }
    assert!(health(d).is_some(), "{}", d.stderr());
}

trait ShutdownWrite {
    fn conn_shutdown_write(&self);
}

impl ShutdownWrite for Client {
    fn conn_shutdown_write(&self) {
        self.try_shutdown_write().expect("shutdown(SHUT_WR)");
    }
}

#[test]
fn a_half_closed_request_gets_its_whole_answer_over_the_unix_socket() {
    let dir = TempDir::new("halfunix");
    let d = Daemon::builder("halfunix")
        .model(long_model(&dir, 100_000))
        .args(["--max-new-tokens", "200000", "--max-context-len", "1000000"])
        .start();
    half_closed_requests_get_whole_answers(&d, || d.client());
}

#[test]
fn a_half_closed_request_gets_its_whole_answer_over_tcp() {
    let dir = TempDir::new("halftcp");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::builder("halftcp")
        .model(long_model(&dir, 100_000))
        .args(["--max-new-tokens", "200000", "--max-context-len", "1000000"])
        .args(["--tcp".to_owned(), addr.clone()])
        .start();
    half_closed_requests_get_whole_answers(&d, || Client::tcp(&addr));
}

// ---- findings 2 and 11: output that nobody reads expires; a slow reader is waited for ---------

#[test]
fn clients_that_never_read_a_big_closing_answer_are_dropped_after_the_write_timeout() {
    let dir = TempDir::new("unread");
    let d = Daemon::builder("unread")
        .model(long_model(&dir, 400_000))
        .args([
            "--max-new-tokens",
            "1000000",
            "--max-context-len",
            "1000000",
        ])
        .args(["--max-connections", "5"])
        .args(["--write-timeout", "1"])
        .start();
    // Four clients take four of the five slots, each asking for an answer of megabytes that
    // ends the connection, and never read it.
    let hogs: Vec<UnixStream> = (0..4)
        .map(|_| {
            let mut s = UnixStream::connect(&d.socket).unwrap();
            s.write_all(&closing_chat(false)).unwrap();
            s
        })
        .collect();
    // They are dropped once their answers stall: /health (the fifth slot) sees only itself.
    common::wait_until(EVENTUALLY, "the unread answers to expire", || {
        health(&d).is_some_and(|h| h["connections"] == 1 && h["queue_depth"] == 0)
    });
    // And the slots are free for others again.
    let held: Vec<UnixStream> = (0..3)
        .map(|_| UnixStream::connect(&d.socket).unwrap())
        .collect();
    assert!(health(&d).is_some(), "{}", d.stderr());
    drop((hogs, held));
}

#[test]
fn an_echoed_megabyte_model_name_is_cut_short() {
    let d = Daemon::builder("echo")
        .args(["--max-body-bytes", "4M"])
        .start();
    let name = "m".repeat(1 << 20);
    let mut c = d.client();
    c.send_raw(&post_request(
        "/v1/chat/completions",
        &json!({"model": name, "messages": [{"role": "user", "content": "hi"}]}),
    ));
    let r = c.read_response();
    assert_eq!(r.status, 404);
    assert!(r.body.len() < 1024, "{} bytes", r.body.len());
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("mmmm…"), "{message}");
}

#[test]
fn a_slow_reader_of_a_long_fast_stream_gets_all_of_it() {
    let dir = TempDir::new("slowread");
    let d = Daemon::builder("slowread")
        .model(long_model(&dir, 100_000))
        .args([
            "--max-new-tokens",
            "1000000",
            "--max-context-len",
            "1000000",
        ])
        .args(["--output-cap-bytes", "65536"])
        .start();
    let mut c = d.client();
    c.send_raw(&post_request(
        "/v1/chat/completions",
        &json!({"stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    ));
    // Far slower than the simulator: 4 KiB per read, a pause after each.
    c.read_slowly(4096, 4096);
    let r = c.read_response();
    assert_eq!(r.status, 200);
    let events = sse_data(&r.body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let finish = events
        .iter()
        .rev()
        .find_map(|e| {
            serde_json::from_str::<Value>(e)
                .ok()
                .filter(|v| !v["choices"][0]["finish_reason"].is_null())
        })
        .expect("a finish reason");
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let tokens = events.iter().filter(|e| e.contains("\"content\"")).count();
    // Tokens that end inside a UTF-8 character are sent with the next one.
    assert!(tokens >= 80_000, "{tokens} content events");
}

// ---- finding 3: keyless TCP peers --------------------------------------------------------------

#[test]
fn a_keyless_tcp_request_is_refused_at_its_head_before_the_body() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _d = Daemon::builder("keyhead")
        .args([
            "--tcp".to_owned(),
            addr.clone(),
            "--api-key".into(),
            "k".into(),
        ])
        .start();
    let mut c = Client::tcp(&addr);
    // The head announces a megabyte that never comes.
    c.send_raw(
        b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 1000000\r\n\
          Content-Type: application/json\r\n\r\n",
    );
    let r = c.read_response();
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    assert_eq!(r.header("connection"), Some("close"));
    // A keyed client with the same head is waited for.
    let mut k = Client::tcp(&addr);
    let body = json!({"messages": [{"role": "user", "content": "hi"}]}).to_string();
    k.send_raw(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nAuthorization: Bearer k\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    std::thread::sleep(Duration::from_millis(100));
    k.send_raw(body.as_bytes());
    assert_eq!(k.read_response().status, 200);
}

#[test]
fn tcp_peers_cannot_take_the_slots_kept_for_the_unix_socket() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::builder("reserve")
        .args(["--tcp".to_owned(), addr.clone()])
        .args(["--max-connections", "8"])
        .start();
    // Eight TCP peers that send nothing: six get slots, the rest a 503.
    let tcp: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    let mut refused = 0;
    for s in &tcp {
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = [0u8; 64];
        if (&*s).read(&mut buf).is_ok_and(|n| n > 0) {
            assert!(buf.starts_with(b"HTTP/1.1 503"), "{buf:?}");
            refused += 1;
        }
    }
    assert_eq!(refused, 2, "TCP peers beyond their share are refused");
    // The Unix socket still has its two slots.
    let mut a = d.client();
    let mut b = d.client();
    assert_eq!(a.get("/health").status, 200, "{}", d.stderr());
    assert_eq!(b.get("/health").status, 200);
    drop(tcp);
}

// ---- finding 5: refused peers hold slots like any other ---------------------------------------

#[test]
fn peers_refused_by_the_allow_list_count_against_max_connections() {
    let d = Daemon::builder("refusedcount")
        .args(["--allow-uid", "4242", "--socket-mode", "0666"])
        .args(["--max-connections", "3"])
        .start();
    // Root is always allowed: a first request settles whatever the daemon opens lazily.
    assert!(health(&d).is_some());
    let before = d.fd_count();
    // Ten peers of another user connect, read their answer's status line, and stay connected
    // until we close their stdin.
    // A refused peer's request may be unread when its connection is dropped: a reset.
    let script = r#"
import socket, sys
def status(s):
    try:
        return s.recv(200).split(b"\r\n")[0].decode().replace(" ", "_")
    except OSError:
        return "reset"
ss = [socket.socket(socket.AF_UNIX) for _ in range(10)]
for s in ss:
    s.connect(sys.argv[1])
for s in ss:
    try:
        s.sendall(b"GET /health HTTP/1.1\r\n\r\n")
    except OSError:
        pass
print(" ".join(status(s) for s in ss), flush=True)
sys.stdin.read()
"#;
    let mut child = {
        use std::os::unix::process::CommandExt;
        Command::new("/usr/bin/python3")
            .args(["-c", script, d.socket.to_str().unwrap()])
            .uid(65534)
            .gid(65534)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    };
    let mut line = String::new();
    let mut out = child.stdout.take().unwrap();
    let mut byte = [0u8; 1];
    while out.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        line.push(char::from(byte[0]));
    }
    let during = d.fd_count();
    drop(child.stdin.take());
    child.wait().unwrap();
    let answers: Vec<&str> = line.split(' ').collect();
    assert_eq!(answers.len(), 10, "{line}");
    assert!(
        answers.iter().all(|a| a.starts_with("HTTP/1.1_40")
            || a.starts_with("HTTP/1.1_503")
            || *a == "reset"),
        "{line}"
    );
    let forbidden = answers.iter().filter(|a| a.contains("403")).count();
    assert!((1..=3).contains(&forbidden), "{line}");
    // One more for a refused peer being accepted and closed as we look.
    assert!(
        during <= before + 4,
        "{during} fds while refused peers connect, {before} before: {line}"
    );
}

// ---- finding 6: accepting again once file descriptors come back --------------------------------

fn lowest_free_fd(d: &Daemon) -> u64 {
    let open: std::collections::BTreeSet<u64> = std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|n| !open.contains(n)).unwrap()
}

#[test]
fn the_backlog_is_accepted_when_file_descriptors_come_back() {
    let d = Daemon::start("emfile");
    let mut first = d.client();
    assert_eq!(first.get("/health").status, 200);
    // Room for the connection held and not one more: a new descriptor takes the lowest free
    // number, which must not be below the limit.
    let limit = lowest_free_fd(&d);
    let status = Command::new("prlimit")
        .arg(format!("--pid={}", d.pid()))
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .unwrap();
    assert!(status.success());
    let mut waiting = d.client();
    waiting.send_raw(b"GET /health HTTP/1.1\r\n\r\n");
    // Its accept fails (EMFILE); let the daemon see that before the fd comes back.
    std::thread::sleep(Duration::from_millis(300));
    drop(first);
    let r = waiting.read_response();
    assert_eq!(r.status, 200, "{}", d.stderr());
}

/// Clients that send most of a large body and leave: their buffers go back to the system once
/// they are dropped (here 250 MiB of them), not only the memory of requests that were answered.
/// Without that, glibc kept 125 MiB of them for good (fewer clients' buffers happen to be
/// returned by the allocator itself).
#[test]
fn buffers_of_clients_that_left_mid_body_are_given_back() {
    let d = Daemon::start("leftbody");
    let baseline = d.rss_kib();
    let n = 1 << 20;
    let clients: Vec<Client> = (0..250)
        .map(|_| {
            let mut c = d.client();
            c.send_raw(
                format!("POST /v1/chat/completions HTTP/1.1\r\nContent-Length: {n}\r\n\r\n")
                    .as_bytes(),
            );
            c.send_raw(&vec![b' '; n - 1]);
            c
        })
        .collect();
    common::wait_until(Duration::from_secs(30), "the bodies read", || {
        d.rss_kib() > baseline + 200 * 1024
    });
    drop(clients);
    let bound = baseline + 16 * 1024;
    common::wait_until(Duration::from_secs(30), "the buffers given back", || {
        d.rss_kib() < bound
    });
}
