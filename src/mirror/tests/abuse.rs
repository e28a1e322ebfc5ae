//! The router's bounds against clients that misbehave or flood it: slow bodies and headers,
//! too many connections, copies that would not fit the memory budget, a forged copy marker.
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{BODY, Upstream, flags, post_predict, start_router, start_upstream, wait_for_metric};

/// A request whose body stops after its first bytes (the rest is sent by the caller).
const HEAD_AND_HALF_A_BODY: &str = "POST /predict HTTP/1.1\r\nhost: router\r\n\
    content-type: application/json\r\ncontent-length: 21\r\n\r\n{\"instances\"";
const REST_OF_THE_BODY: &str = ":[[1,2]]}";

/// Reads what the router sends until it has sent a whole status line, or `deadline` passes.
async fn status_line(stream: &mut TcpStream, deadline: Duration) -> Option<String> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let until = Instant::now() + deadline;
    loop {
        if let Some(end) = seen.windows(2).position(|w| w == b"\r\n") {
            return Some(String::from_utf8_lossy(&seen[..end]).into_owned());
        }
        let left = until.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

async fn upstreams(shadow_delay: Duration) -> (Upstream, SocketAddr, Upstream, SocketAddr) {
    let stable = Upstream {
        label: "a",
        ..Default::default()
    };
    let shadow = Upstream {
        label: "a",
        delay: shadow_delay,
        ..Default::default()
    };
    let stable_addr = start_upstream(stable.clone()).await;
    let shadow_addr = start_upstream(shadow.clone()).await;
    (stable, stable_addr, shadow, shadow_addr)
}

#[tokio::test]
async fn a_body_that_is_copied_must_arrive_within_the_timeout() {
    let (stable, stable_addr, _, shadow_addr) = upstreams(Duration::ZERO).await;
    let router = start_router(&flags(
        stable_addr,
        Some(shadow_addr),
        &["--request-body-timeout=300ms"],
    ))
    .await;
    let mut stream = TcpStream::connect(router.addr).await.unwrap();
    stream
        .write_all(HEAD_AND_HALF_A_BODY.as_bytes())
        .await
        .unwrap();
    let line = status_line(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(line.as_deref(), Some("HTTP/1.1 408 Request Timeout"));
    assert!(stable.seen.lock().unwrap().is_empty(), "stable saw nothing");
}

#[tokio::test]
async fn a_request_that_will_not_be_copied_is_not_buffered() {
    // One copy at a time, held for seconds by a slow shadow: the next request has no place,
    // so the router streams it to stable instead of reading it first (a slow body is then
    // stable's business, not a 408).
    let (_, stable_addr, shadow, shadow_addr) = upstreams(Duration::from_secs(3)).await;
    let router = start_router(&flags(
        stable_addr,
        Some(shadow_addr),
        &["--request-body-timeout=300ms", "--max-in-flight=1"],
    ))
    .await;
    let (status, ..) = post_predict(router.addr, BODY, &[]).await;
    assert_eq!(status, 201);
    wait_for_metric(router.metrics, "modelship_mirror_in_flight", 1.0).await;
    assert_eq!(shadow.seen.lock().unwrap().len(), 1);

    let mut stream = TcpStream::connect(router.addr).await.unwrap();
    stream
        .write_all(HEAD_AND_HALF_A_BODY.as_bytes())
        .await
        .unwrap();
    // Twice the body timeout before the rest of the body.
    tokio::time::sleep(Duration::from_millis(600)).await;
    stream.write_all(REST_OF_THE_BODY.as_bytes()).await.unwrap();
    let line = status_line(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(line.as_deref(), Some("HTTP/1.1 201 Created"));
    wait_for_metric(
        router.metrics,
        r#"modelship_mirror_dropped_total{reason="in_flight_limit"}"#,
        1.0,
    )
    .await;
}

#[tokio::test]
async fn slow_headers_close_the_connection() {
    let (_, stable_addr, _, shadow_addr) = upstreams(Duration::ZERO).await;
    let router = start_router(&flags(
        stable_addr,
        Some(shadow_addr),
        &["--header-timeout=300ms"],
    ))
    .await;
    let mut stream = TcpStream::connect(router.addr).await.unwrap();
    stream
        .write_all(b"POST /predict HTTP/1.1\r\nhost: r")
        .await
        .unwrap();
    // The router gives up on the connection: it closes it (possibly after a 408).
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("the connection stayed open past the header timeout");
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the connection stayed open past the header timeout"),
        }
    }
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_place() {
    let (_, stable_addr, _, shadow_addr) = upstreams(Duration::ZERO).await;
    // The limit is the router's, whichever worker thread would accept the connection.
    let router = start_router(&flags(
        stable_addr,
        Some(shadow_addr),
        &["--max-connections=1", "--workers=3"],
    ))
    .await;
    let request = format!(
        "POST /predict HTTP/1.1\r\nhost: router\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let mut first = TcpStream::connect(router.addr).await.unwrap();
    first.write_all(request.as_bytes()).await.unwrap();
    let line = status_line(&mut first, Duration::from_secs(10)).await;
    assert_eq!(line.as_deref(), Some("HTTP/1.1 201 Created"));

    // The first connection stays open (keep-alive): the second one is not served meanwhile.
    let mut second = TcpStream::connect(router.addr).await.unwrap();
    second.write_all(request.as_bytes()).await.unwrap();
    assert_eq!(
        status_line(&mut second, Duration::from_millis(500)).await,
        None,
        "served beyond the connection limit"
    );
    drop(first);
    let line = status_line(&mut second, Duration::from_secs(10)).await;
    assert_eq!(line.as_deref(), Some("HTTP/1.1 201 Created"));
}

#[tokio::test]
async fn copies_beyond_the_memory_budget_are_dropped() {
    // The budget holds one small request's copy: while the slow shadow keeps the first copy,
    // the second cannot reserve its request and is dropped; clients notice nothing.
    let (_, stable_addr, shadow, shadow_addr) = upstreams(Duration::from_secs(3)).await;
    let router = start_router(&flags(
        stable_addr,
        Some(shadow_addr),
        &["--max-body-bytes=1024", "--max-copy-bytes=1024"],
    ))
    .await;
    let (status, ..) = post_predict(router.addr, BODY, &[]).await;
    assert_eq!(status, 201);
    wait_for_metric(router.metrics, "modelship_mirror_in_flight", 1.0).await;
    let (status, ..) = post_predict(router.addr, BODY, &[]).await;
    assert_eq!(status, 201);
    wait_for_metric(
        router.metrics,
        r#"modelship_mirror_dropped_total{reason="memory_limit"}"#,
        1.0,
    )
    .await;
    assert_eq!(shadow.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_client_cannot_mark_its_request_as_a_copy() {
    let (stable, stable_addr, shadow, shadow_addr) = upstreams(Duration::ZERO).await;
    let router = start_router(&flags(stable_addr, Some(shadow_addr), &[])).await;
    let (status, ..) = post_predict(
        router.addr,
        BODY,
        &[
            ("x-modelship-shadow", "1"),
            ("x-api-key", "secret"),
            ("cookie", "session=1"),
        ],
    )
    .await;
    assert_eq!(status, 201);
    let deadline = Instant::now() + Duration::from_secs(10);
    while shadow.seen.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the copy never reached the shadow"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen_by_stable = stable.seen.lock().unwrap()[0].clone();
    assert!(seen_by_stable.get("x-modelship-shadow").is_none());
    assert_eq!(seen_by_stable["x-api-key"], "secret");
    let seen_by_shadow = shadow.seen.lock().unwrap()[0].clone();
    assert_eq!(seen_by_shadow["x-modelship-shadow"], "1");
    assert!(seen_by_shadow.get("x-api-key").is_none());
    assert!(seen_by_shadow.get("cookie").is_none());
}
