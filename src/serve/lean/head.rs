//! A client's request head, parsed once with httparse (the parser hyper uses) into the parts a
//! metered call reads, its values sliced from the read buffer rather than copied. Only the
//! common shape of a metered call is taken here: HTTP/1.1, a path under `/api/v1/`, no body;
//! anything else (a body, `Expect`, an upgrade, `HEAD`, a browser's call that the application
//! answers, a head that does not parse) is left to hyper's server, byte for byte.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};

use crate::gateway::wire::Span;
use crate::serve::front::is_metered;

/// The most headers a request may have (hyper's own limit).
const MAX_HEADERS: usize = 100;

// Returned once a call and matched at once: boxing the head would add an allocation a call.
#[allow(clippy::large_enum_variant)]
pub(super) enum Parsed {
    /// A metered call without a body. `close`: the client asked to close after its answer.
    Call {
        head: http::request::Parts,
        close: bool,
    },
    /// Not all of the head is in the buffer yet.
    Partial,
    /// Not this server's to answer: hyper's is given the bytes in hand.
    Elsewhere,
}

/// The head at the start of `buffer`, taken out of it when it is a metered call's; the bytes
/// after it (a pipelined request) stay.
pub(super) fn parse(buffer: &mut BytesMut, browsers_through_app: bool) -> Parsed {
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let length = match request.parse_with_uninit_headers(buffer, &mut headers) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Elsewhere,
    };
    let (Some(method), Some(path), Some(1)) = (request.method, request.path, request.version)
    else {
        return Parsed::Elsewhere;
    };
    if method == "HEAD" || method == "CONNECT" {
        return Parsed::Elsewhere;
    }
    let Ok(method) = http::Method::from_bytes(method.as_bytes()) else {
        return Parsed::Elsewhere;
    };
    // Where the path and each name and value lie, to slice them once the head is taken out.
    let path_span = Span::of(buffer, path.as_bytes());
    let mut spans = [(Span::default(), Span::default()); MAX_HEADERS];
    let (mut close, mut names_origin) = (false, false);
    for (header, span) in request.headers.iter().zip(spans.iter_mut()) {
        let (name, value) = (header.name.as_bytes(), header.value);
        match served_here(name, value) {
            Some(Connection::Close) => close = true,
            Some(Connection::Open) => {}
            None => return Parsed::Elsewhere,
        }
        names_origin |= name.len() == 6 && name.eq_ignore_ascii_case(b"origin");
        *span = (Span::of(buffer, name), Span::of(buffer, value));
    }
    if !is_metered(path, names_origin, browsers_through_app) {
        return Parsed::Elsewhere;
    }
    let count = request.headers.len();
    let head = buffer.split_to(length).freeze();
    match parts(&head, method, path_span, &spans[..count]) {
        Some(head) => Parsed::Call { head, close },
        None => {
            // Not expected after httparse's checks; hyper gets the head back as it came.
            let mut whole = BytesMut::with_capacity(head.len() + buffer.len());
            whole.extend_from_slice(&head);
            whole.extend_from_slice(buffer);
            *buffer = whole;
            Parsed::Elsewhere
        }
    }
}

enum Connection {
    Open,
    Close,
}

/// Whether a request with this header is still answered here (`None`: it is hyper's), and
/// whether it asks to close the connection. Names are told apart by their length first, as
/// every header of every call comes through here.
fn served_here(name: &[u8], value: &[u8]) -> Option<Connection> {
    let is = |candidate: &[u8]| candidate.eq_ignore_ascii_case(name);
    match name.len() {
        // A body, or a request that wants an interim answer or another protocol.
        17 if is(b"transfer-encoding") => None,
        14 if is(b"content-length") => (value.trim_ascii() == b"0").then_some(Connection::Open),
        6 if is(b"expect") => None,
        7 if is(b"upgrade") => None,
        10 if is(b"connection") => {
            let mut close = false;
            for token in value.split(|byte| *byte == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"upgrade") {
                    return None;
                }
                close |= token.eq_ignore_ascii_case(b"close");
            }
            Some(if close {
                Connection::Close
            } else {
                Connection::Open
            })
        }
        _ => Some(Connection::Open),
    }
}

/// The head in `http`'s types, its URI and values sharing `head`'s bytes.
fn parts(
    head: &Bytes,
    method: http::Method,
    path: Span,
    spans: &[(Span, Span)],
) -> Option<http::request::Parts> {
    let mut parts = http::Request::new(()).into_parts().0;
    parts.method = method;
    parts.uri = http::Uri::from_maybe_shared(head.slice(path.range())).ok()?;
    parts.headers.reserve(spans.len());
    for (name, value) in spans {
        let name = HeaderName::from_bytes(&head[name.range()]).ok()?;
        let value = HeaderValue::from_maybe_shared(head.slice(value.range())).ok()?;
        parts.headers.append(name, value);
    }
    Some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> (Parsed, BytesMut) {
        let mut buffer = BytesMut::from(text.as_bytes());
        (parse(&mut buffer, true), buffer)
    }

    #[test]
    fn a_metered_call_is_taken_with_its_headers_and_the_next_request_left() {
        let (call, rest) = parsed(
            "GET /api/v1/echo/a?b=1 HTTP/1.1\r\nHost: x\r\nX-API-Key: k\r\nX-Two: 1\r\nx-two: 2\r\n\r\nGET /next",
        );
        let Parsed::Call { head, close } = call else {
            panic!("not taken");
        };
        assert!(!close);
        assert_eq!(head.method, http::Method::GET);
        assert_eq!(head.uri.path(), "/api/v1/echo/a");
        assert_eq!(head.uri.query(), Some("b=1"));
        assert_eq!(head.version, http::Version::HTTP_11);
        assert_eq!(head.headers["x-api-key"], "k");
        let twos: Vec<_> = head.headers.get_all("x-two").iter().collect();
        assert_eq!(twos, ["1", "2"]);
        assert_eq!(&rest[..], b"GET /next");
    }

    #[test]
    fn connection_close_is_noted_and_a_zero_length_is_no_body() {
        let (call, _) = parsed(
            "POST /api/v1/echo/a HTTP/1.1\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(matches!(call, Parsed::Call { close: true, .. }));
    }

    #[test]
    fn everything_else_is_left_to_hyper_untouched() {
        for text in [
            "GET /myapi/plans HTTP/1.1\r\n\r\n",
            "GET /api/v1/echo/a HTTP/1.0\r\n\r\n",
            "HEAD /api/v1/echo/a HTTP/1.1\r\n\r\n",
            "POST /api/v1/echo/a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            "POST /api/v1/echo/a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /api/v1/echo/a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
            "GET /api/v1/echo/a HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET /api/v1/echo/a HTTP/1.1\r\nOrigin: https://app.example\r\n\r\n",
            "GET http://host/api/v1/echo/a HTTP/1.1\r\n\r\n",
            "GET /api/v1/echo/a HTTP/1.1\r\nBad Header: x\r\n\r\n",
        ] {
            let (call, rest) = parsed(text);
            assert!(matches!(call, Parsed::Elsewhere), "{text}");
            assert_eq!(&rest[..], text.as_bytes(), "{text}");
        }
    }

    #[test]
    fn a_browsers_call_is_taken_when_the_gateway_answers_browsers_itself() {
        let mut buffer = BytesMut::from(
            &b"GET /api/v1/echo/a HTTP/1.1\r\nOrigin: https://app.example\r\n\r\n"[..],
        );
        assert!(matches!(parse(&mut buffer, false), Parsed::Call { .. }));
    }

    #[test]
    fn a_head_in_part_waits_for_the_rest() {
        let (call, rest) = parsed("GET /api/v1/echo/a HTTP/1.1\r\nHost: x");
        assert!(matches!(call, Parsed::Partial));
        assert_eq!(&rest[..], b"GET /api/v1/echo/a HTTP/1.1\r\nHost: x");
    }
}
