//! The server's own path for metered calls, at the byte level: pipelined calls answered in
//! order, a connection that turns to the application's requests (hyper's server takes it over
//! mid-way, from the byte it was given), a head that arrives in pieces, and `Connection: close`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::gateway;

/// One answer read off a raw connection.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(candidate, _)| candidate.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The answers in `bytes`, one per request; `to_head[i]`: the i-th request was `HEAD` (its
/// answer has no body whatever its length says).
fn answers(mut bytes: &[u8], to_head: &[bool]) -> Vec<Answer> {
    let mut answers = Vec::new();
    for &head_only in to_head {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(length) = response.parse(bytes).unwrap() else {
            panic!("answer {} incomplete", answers.len());
        };
        let status = response.code.unwrap();
        let headers: Vec<(String, String)> = response
            .headers
            .iter()
            .map(|header| {
                let value = String::from_utf8_lossy(header.value).into_owned();
                (header.name.to_ascii_lowercase(), value)
            })
            .collect();
        bytes = &bytes[length..];
        let mut answer = Answer {
            status,
            headers,
            body: Vec::new(),
        };
        if !head_only && status != 204 && status != 304 {
            if answer.header("transfer-encoding") == Some("chunked") {
                loop {
                    let line_end = bytes.windows(2).position(|pair| pair == b"\r\n").unwrap();
                    let size =
                        usize::from_str_radix(std::str::from_utf8(&bytes[..line_end]).unwrap(), 16)
                            .unwrap();
                    bytes = &bytes[line_end + 2..];
                    if size == 0 {
                        assert!(bytes.starts_with(b"\r\n"), "no trailers are sent");
                        bytes = &bytes[2..];
                        break;
                    }
                    answer.body.extend_from_slice(&bytes[..size]);
                    assert_eq!(&bytes[size..size + 2], b"\r\n");
                    bytes = &bytes[size + 2..];
                }
            } else {
                let length: usize = answer.header("content-length").unwrap().parse().unwrap();
                answer.body.extend_from_slice(&bytes[..length]);
                bytes = &bytes[length..];
            }
        }
        answers.push(answer);
    }
    assert!(bytes.is_empty(), "more than the answers asked for");
    answers
}

/// What the server sent until it closed the connection (after `Connection: close`).
async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut read = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut read))
        .await
        .expect("the connection was not closed after Connection: close")
        .unwrap();
    read
}

/// Five requests sent at once on one connection: two metered calls (the server's own path),
/// then a `HEAD` call and an application request (hyper's server takes the connection over
/// with the bytes already read), then a call that closes the connection. Every answer comes,
/// in order, each call charged once.
#[tokio::test]
async fn pipelined_calls_and_application_requests_are_answered_in_order_on_one_connection() {
    let gw = gateway().await;
    gw.set_limits(1000, 100_000, None).await;
    gw.fund(100).await;
    let key = gw.new_key().await;
    let call = |path: &str, method: &str, extra: &str| {
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {key}\r\n{extra}\r\n")
    };
    let requests = [
        call("/api/v1/echo/one", "GET", ""),
        call(
            "/api/v1/echo/two?x=1",
            "GET",
            "X-Request-Id: second-call\r\n",
        ),
        call("/api/v1/echo/three", "HEAD", ""),
        "GET /myapi/plans HTTP/1.1\r\nHost: localhost\r\n\r\n".to_owned(),
        call("/api/v1/echo/four", "GET", "Connection: close\r\n"),
    ]
    .concat();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", gw.app.port))
        .await
        .unwrap();
    stream.write_all(requests.as_bytes()).await.unwrap();
    // The server closes after the last answer: the client does not.
    let read = read_until_closed(&mut stream).await;
    let answers = answers(&read, &[false, false, true, false, false]);
    let statuses: Vec<u16> = answers.iter().map(|answer| answer.status).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200]);
    for (index, path) in [(0, "/base/one"), (1, "/base/two"), (4, "/base/four")] {
        let answer = &answers[index];
        let echoed: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(echoed["path"], path, "answer {index}");
        assert!(answer.header("date").is_some(), "answer {index}");
        assert!(answer.header("x-request-id").is_some(), "answer {index}");
        assert_eq!(answer.header("x-upstream"), Some("yes"));
        // The provider's own connection header stays on its hop.
        assert_ne!(answer.header("connection"), Some("keep-alive"));
    }
    assert_eq!(answers[1].header("x-request-id"), Some("second-call"));
    let echoed: serde_json::Value = serde_json::from_slice(&answers[1].body).unwrap();
    assert_eq!(echoed["query"], "x=1");
    let remaining: Vec<Option<&str>> = answers
        .iter()
        .map(|answer| answer.header("x-credits-remaining"))
        .collect();
    assert_eq!(
        remaining,
        [Some("99"), Some("98"), Some("97"), None, Some("96")]
    );
    assert!(answers[2].body.is_empty(), "a HEAD answer has no body");
    assert!(
        answers[3].text().contains("\"data\""),
        "{}",
        answers[3].text()
    );
    assert_eq!(answers[4].header("connection"), Some("close"));
    assert_eq!(gw.settled_balance(96).await, 96);
}

/// A head that arrives in pieces (cut in the request line, in a header's name and before its
/// last line) is answered once it is whole; `Connection: close` is answered with it and the
/// connection ends. A refused call (no key) is answered in the envelope on the same path.
#[tokio::test]
async fn a_head_in_pieces_is_answered_whole_and_connection_close_ends_the_connection() {
    let gw = gateway().await;
    gw.fund(10).await;
    let key = gw.new_key().await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", gw.app.port))
        .await
        .unwrap();
    let refused = "GET /api/v1/echo/none HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let head = format!(
        "GET /api/v1/ec|ho/pieces HTTP/1.1\r\nHost: localhost\r\nX-API-|Key: {key}\r\nConnection: close\r\n|\r\n"
    );
    stream.write_all(refused.as_bytes()).await.unwrap();
    for piece in head.split('|') {
        stream.write_all(piece.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let read = read_until_closed(&mut stream).await;
    let answers = answers(&read, &[false, false]);
    assert_eq!(answers[0].status, 401);
    let envelope: serde_json::Value = serde_json::from_slice(&answers[0].body).unwrap();
    assert_eq!(envelope["sub_code"], 40102, "{envelope}");
    assert_eq!(
        envelope["request_id"].as_str(),
        answers[0].header("x-request-id")
    );
    assert_eq!(answers[1].status, 200);
    let echoed: serde_json::Value = serde_json::from_slice(&answers[1].body).unwrap();
    assert_eq!(echoed["path"], "/base/pieces");
    assert_eq!(answers[1].header("connection"), Some("close"));
    assert_eq!(gw.settled_balance(9).await, 9);
}
