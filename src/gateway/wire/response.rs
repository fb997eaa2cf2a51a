//! The provider's answer head, parsed (httparse, as hyper parses it) straight from the
//! connection's buffer into the head the client's answer is built from: the hop-by-hop headers
//! and the length are left out as it is read (the body declares its own length), and the
//! values are slices of the buffer, not copies.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::{Span, is_hop_by_hop};

/// The most headers an answer may have.
const MAX_HEADERS: usize = 100;

/// How the answer's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (an answer to `HEAD`, a 204 or a 304).
    Empty,
    Length(u64),
    Chunked,
    /// Until the provider closes the connection.
    UntilClose,
}

#[derive(Debug)]
pub struct ResponseHead {
    pub parts: http::response::Parts,
    pub framing: Framing,
    /// Whether the connection may carry another request once the body has been read.
    pub reusable: bool,
}

/// Parses the head at the start of `buffer` and takes it out; `Ok(None)` while incomplete. An
/// interim answer (1xx) is taken out and skipped. `to_head`: the request was `HEAD`.
pub fn parse(buffer: &mut BytesMut, to_head: bool) -> Result<Option<ResponseHead>, String> {
    loop {
        let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buffer,
            &mut headers,
        );
        let length = match parsed {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(error) => return Err(format!("an invalid answer head: {error}")),
        };
        let code = response.code.unwrap_or(0);
        if (100..200).contains(&code) {
            if code == 101 {
                return Err("the provider switched protocols".to_owned());
            }
            let _ = buffer.split_to(length);
            continue;
        }
        let status = http::StatusCode::from_u16(code)
            .map_err(|_| format!("an invalid answer status {code}"))?;
        let http11 = response.version == Some(1);
        // Where each name and value lies, to slice them once the head is taken out.
        let mut spans = [(Span::default(), Span::default()); MAX_HEADERS];
        for (header, span) in response.headers.iter().zip(spans.iter_mut()) {
            *span = (
                Span::of(buffer, header.name.as_bytes()),
                Span::of(buffer, header.value),
            );
        }
        let count = response.headers.len();
        let head = buffer.split_to(length).freeze();
        return build(&head, &spans[..count], status, http11, to_head).map(Some);
    }
}

fn build(
    head: &Bytes,
    spans: &[(Span, Span)],
    status: http::StatusCode,
    http11: bool,
    to_head: bool,
) -> Result<ResponseHead, String> {
    let mut chunked = false;
    let mut encoded = false;
    let mut length: Option<u64> = None;
    let mut close = !http11;
    let mut named = Vec::new();
    for (name, value) in spans {
        let (name, value) = (&head[name.range()], &head[value.range()]);
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            encoded = true;
            // Chunked is the final coding, or the body runs to the close.
            chunked = last_token(value).eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let parsed = std::str::from_utf8(value)
                .ok()
                .and_then(|value| value.trim().parse::<u64>().ok())
                .ok_or("an invalid Content-Length")?;
            if length.is_some_and(|length| length != parsed) {
                return Err("two different Content-Lengths".to_owned());
            }
            length = Some(parsed);
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|byte| *byte == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    close &= http11;
                } else if !token.is_empty() && !is_hop_by_hop(token) {
                    named.push(token);
                }
            }
        }
    }
    let mut headers = HeaderMap::with_capacity(spans.len() + 3);
    for (name, value) in spans {
        let name_bytes = &head[name.range()];
        if is_hop_by_hop(name_bytes)
            || name_bytes.eq_ignore_ascii_case(b"content-length")
            || named
                .iter()
                .any(|named| named.eq_ignore_ascii_case(name_bytes))
        {
            continue;
        }
        let name = HeaderName::from_bytes(name_bytes)
            .map_err(|_| "an invalid header name in the answer".to_owned())?;
        let value = HeaderValue::from_maybe_shared(head.slice(value.range()))
            .map_err(|_| "an invalid header value in the answer".to_owned())?;
        headers.append(name, value);
    }
    let no_body = to_head || status == http::StatusCode::NO_CONTENT || status.as_u16() == 304;
    let framing = match (no_body, chunked, encoded, length) {
        (true, ..) => Framing::Empty,
        (false, true, ..) => Framing::Chunked,
        (false, false, true, _) => Framing::UntilClose,
        (false, false, false, Some(length)) => Framing::Length(length),
        (false, false, false, None) => Framing::UntilClose,
    };
    // A body that runs to the close, and a head with both codings and a length (a smuggling
    // attempt, or a broken server), leave nothing to reuse.
    let reusable = !close && framing != Framing::UntilClose && !(encoded && length.is_some());
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = status;
    parts.headers = headers;
    Ok(ResponseHead {
        parts,
        framing,
        reusable,
    })
}

fn last_token(value: &[u8]) -> &[u8] {
    value
        .rsplit(|byte| *byte == b',')
        .next()
        .unwrap_or_default()
        .trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str, to_head: bool) -> ResponseHead {
        let mut buffer = BytesMut::from(text);
        parse(&mut buffer, to_head).unwrap().unwrap()
    }

    #[test]
    fn a_sized_answer_keeps_its_headers_less_the_hop_by_hop_ones_and_the_length() {
        let mut buffer = BytesMut::from(
            "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\
             Connection: keep-alive, X-Hop\r\nX-Hop: a\r\nKeep-Alive: timeout=5\r\n\
             X-Multi: 1\r\nX-Multi: 2\r\n\r\nhello",
        );
        let head = parse(&mut buffer, false).unwrap().unwrap();
        assert_eq!(&buffer[..], b"hello", "the body stays in the buffer");
        assert_eq!(head.parts.status, 201);
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.reusable);
        let mut names: Vec<&str> = head.parts.headers.keys().map(|n| n.as_str()).collect();
        names.sort();
        assert_eq!(names, ["content-type", "x-multi"]);
        assert_eq!(head.parts.headers.get_all("x-multi").iter().count(), 2);
    }

    #[test]
    fn an_incomplete_head_waits_and_an_interim_answer_is_skipped() {
        let mut buffer = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Le");
        assert!(parse(&mut buffer, false).unwrap().is_none());
        let head = parsed(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert_eq!(
            (head.parts.status.as_u16(), head.framing),
            (200, Framing::Length(0))
        );
    }

    #[test]
    fn the_framing_follows_the_codings_the_length_and_the_request() {
        let cases = [
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                false,
                Framing::Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                false,
                Framing::UntilClose,
                false,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", false, Framing::UntilClose, false),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\n",
                false,
                Framing::Length(9),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\n",
                false,
                Framing::Length(9),
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
                true,
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 204 No Content\r\n\r\n",
                false,
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                false,
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
                false,
                Framing::Chunked,
                false,
            ),
        ];
        for (text, to_head, framing, reusable) in cases {
            let head = parsed(text, to_head);
            assert_eq!((head.framing, head.reusable), (framing, reusable), "{text}");
            assert!(head.parts.headers.get("transfer-encoding").is_none());
        }
    }

    #[test]
    fn broken_heads_are_errors() {
        for text in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: five\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "NOT HTTP\r\n\r\n",
        ] {
            let mut buffer = BytesMut::from(text);
            assert!(parse(&mut buffer, false).is_err(), "{text}");
        }
    }
}
