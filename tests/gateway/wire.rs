//! The gateway's HTTP/1.1 client to providers, at the byte level: every framing an answer can
//! have, cut across reads, reaches the client whole and charged once; what the connection
//! allows afterwards (reuse or a new connection) is what the answer said; request bodies go
//! out with the framing the client used.

use reqwest::Method;

use super::support::scene::Scene;
use super::support::send;
use super::support::upstream::{Script, ScriptedUpstream};
use super::{RawOk, call, gateway, raw_exchange};

async fn scripted() -> (Scene, ScriptedUpstream, String) {
    let provider = ScriptedUpstream::start().await;
    let gw = gateway().await;
    gw.set_limits(1000, 100_000, None).await;
    gw.add_provider_at("raw", &provider.base_url, 3000).await;
    gw.fund(100).await;
    let key = gw.new_key().await;
    (gw, provider, key)
}

/// Each answer, cut in pieces, is what the client gets, and the calls go on one connection
/// while the answers allow it.
#[tokio::test]
async fn every_answer_framing_reaches_the_client_whole_across_reads() {
    let (gw, provider, key) = scripted().await;
    let cases = [
        // A length, the head cut mid-name and the body mid-way.
        (
            "HTTP/1.1 200 OK\r\nContent-Le|ngth: 11\r\nX-Kind: sized\r\n\r\nhello| world",
            "hello world",
        ),
        // Chunked with an extension and trailers, cut inside a size line and a CRLF.
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Kind: chunked\r\n\r\n5;ext=1\r\nhel|lo\r|\n6\r\n wo|rld\r\n0\r\nX-Trailer: t\r\n|\r\n",
            "hello world",
        ),
        // An interim answer before the real one.
        (
            "HTTP/1.1 100 Continue\r\n\r\n|HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
            "ok",
        ),
        // No content.
        ("HTTP/1.1 204 No Content\r\nX-Kind: empty\r\n\r\n", ""),
    ];
    for (index, (answer, body)) in cases.into_iter().enumerate() {
        provider.answer(Script::cut(answer, false));
        let response = call(&gw.app, &key, "/api/v1/raw/x").await;
        assert!(response.status < 300, "case {index}: {}", response.status);
        assert_eq!(response.text, body, "case {index}");
        assert_eq!(
            response.header("x-credits-remaining"),
            Some((99 - index).to_string().as_str()),
            "case {index}"
        );
        assert!(
            response
                .header("transfer-encoding")
                .is_none_or(|coding| coding == "chunked")
        );
        assert!(
            response.header("x-trailer").is_none(),
            "trailers are not forwarded"
        );
    }
    assert_eq!(
        provider.accepted(),
        1,
        "every answer left its connection reusable"
    );
    assert_eq!(gw.settled_balance(96).await, 96);
}

/// An answer that runs to the close, or says `Connection: close`, or is HTTP/1.0, is read whole
/// and its connection is not used again.
#[tokio::test]
async fn answers_that_end_their_connection_are_read_whole_and_not_reused() {
    let (gw, provider, key) = scripted().await;
    let cases = [
        (
            "HTTP/1.1 200 OK\r\nX-Kind: until-close\r\n\r\nall of| it",
            "all of it",
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye",
            "bye",
            true,
        ),
        (
            "HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nold",
            "old",
            false,
        ),
    ];
    for (index, (answer, body, close_after)) in cases.into_iter().enumerate() {
        provider.answer(Script::cut(answer, close_after));
        let response = call(&gw.app, &key, "/api/v1/raw/x").await;
        assert_eq!(
            (response.status, response.text.as_str()),
            (200, body),
            "case {index}"
        );
        assert_eq!(
            provider.accepted(),
            index + 1,
            "case {index}: a new connection each"
        );
    }
    assert_eq!(gw.settled_balance(97).await, 97);
}

/// A body cut short by the provider or a broken answer is a 50201 that costs nothing when
/// nothing reached the client yet.
#[tokio::test]
async fn broken_answers_cost_nothing() {
    let (gw, provider, key) = scripted().await;
    for (index, answer) in [
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n",
        "HTTP/1.1 200 OK\r\nContent-Le",
        "not http at all\r\n\r\n",
    ]
    .into_iter()
    .enumerate()
    {
        provider.answer(Script::cut(answer, true));
        call(&gw.app, &key, "/api/v1/raw/x")
            .await
            .assert_error(502, Some(50201));
        assert!(provider.requests().len() > index);
    }
    provider.answer(Script::cut(
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        false,
    ));
    call(&gw.app, &key, "/api/v1/raw/x").await.assert_ok_raw();
    assert_eq!(gw.settled_balance(99).await, 99);
}

/// Request bodies go out as the client framed them: a length as a length, chunks as chunks,
/// an empty body as a length of zero; `HEAD` is answered without a body.
#[tokio::test]
async fn request_bodies_keep_their_framing_and_head_has_no_body() {
    let (gw, provider, key) = scripted().await;
    provider.answer(Script::cut(
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        false,
    ));
    let sized = gw
        .app
        .request(Method::POST, "/api/v1/raw/items")
        .header("X-API-Key", &key)
        .body("twelve bytes");
    send(sized).await.assert_ok_raw();
    let chunked = format!(
        "PUT /api/v1/raw/items HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {key}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let answer = raw_exchange(
        &gw.app,
        &chunked,
        b"b\r\nchunk one, \r\n9\r\nchunk two\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let empty = gw
        .app
        .request(Method::POST, "/api/v1/raw/items")
        .header("X-API-Key", &key)
        .header("Content-Length", "0");
    send(empty).await.assert_ok_raw();

    let requests = provider.requests();
    assert!(
        requests[0].starts_with("POST /items HTTP/1.1\r\n"),
        "{}",
        requests[0]
    );
    assert!(requests[0].contains("\r\ncontent-length: 12\r\n"));
    assert!(requests[0].ends_with("\r\n\r\ntwelve bytes"));
    assert!(
        requests[1].starts_with("PUT /items HTTP/1.1\r\n"),
        "{}",
        requests[1]
    );
    assert!(requests[1].contains("\r\ntransfer-encoding: chunked\r\n"));
    let body = &requests[1][requests[1].find("\r\n\r\n").unwrap() + 4..];
    let decoded: String = body
        .split("\r\n")
        .collect::<Vec<_>>()
        .chunks(2)
        .filter_map(|pair| pair.get(1).copied())
        .collect();
    assert_eq!(decoded, "chunk one, chunk two");
    assert!(
        requests[2].contains("\r\ncontent-length: 0\r\n"),
        "{}",
        requests[2]
    );
    assert!(requests[2].ends_with("\r\n\r\n"));

    provider.answer(Script::cut(
        "HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n",
        false,
    ));
    let head = gw
        .app
        .request(Method::HEAD, "/api/v1/raw/items")
        .header("X-API-Key", &key);
    let answer = send(head).await;
    assert_eq!((answer.status, answer.text.as_str()), (200, ""));
    // The connection stayed in step: the next call is answered on it.
    provider.answer(Script::cut(
        "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext",
        false,
    ));
    assert_eq!(call(&gw.app, &key, "/api/v1/raw/x").await.text, "next");
    assert_eq!(provider.accepted(), 1);
    assert_eq!(gw.settled_balance(95).await, 95);
}
