//! The optional TCP listener: same loop, and an API key required off loopback.

mod common;

use std::process::Command;

use common::{Client, Daemon};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn tcp_listener_serves_beside_the_unix_socket() {
    let port = free_port();
    let d = Daemon::builder("tcp")
        .args(["--tcp".to_owned(), format!("127.0.0.1:{port}")])
        .start();
    let r = Client::tcp(&format!("127.0.0.1:{port}")).get("/health");
    assert_eq!(r.status, 200);
    assert_eq!(d.client().get("/health").status, 200);
}

#[test]
fn an_api_key_is_checked_on_tcp() {
    let port = free_port();
    let _d = Daemon::builder("tcpkey")
        .args([
            "--tcp".to_owned(),
            format!("127.0.0.1:{port}"),
            "--api-key".into(),
            "s3cret".into(),
        ])
        .start();
    let addr = format!("127.0.0.1:{port}");
    let r = Client::tcp(&addr).get("/health");
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    let mut c = Client::tcp(&addr);
    c.send_raw(b"GET /health HTTP/1.1\r\nAuthorization: Bearer wrong!\r\n\r\n");
    assert_eq!(c.read_response().status, 401);
    let mut c = Client::tcp(&addr);
    c.send_raw(b"GET /health HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n");
    assert_eq!(c.read_response().status, 200);
}

#[test]
fn a_non_loopback_address_without_a_key_is_refused_at_start() {
    let dir = common::TempDir::new("tcpnokey");
    let out = Command::new(common::daemon_bin())
        .args(["--model", common::fast_model().to_str().unwrap()])
        .args([
            "--socket",
            dir.path().join("s.sock").to_str().unwrap(),
            "--tcp",
            "0.0.0.0:18080",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("API key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.path().join("s.sock").exists());
}
