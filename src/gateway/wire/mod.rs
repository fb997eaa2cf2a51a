//! HTTP/1.1 as the gateway speaks it to providers, written by hand on the metered call's hot
//! path: the request head written straight into one buffer (the client's headers copied once,
//! from the map the server parsed, less those not forwarded), the answer's head parsed with
//! httparse (the parser hyper uses) into the map the client's answer is sent from, and the
//! body read from the same buffer, with no task or channel between the call and its socket.
//! hyper's client connection cost about 14,700 instructions a call (`bench/HISTORY.md`): a
//! task per connection, a channel each way, and the map copied twice.

mod chunked;
mod response;
mod stream;

use std::io::Write as _;

pub use chunked::{Chunked, Step};
pub use response::{Framing, ResponseHead, parse as parse_response_head};
pub use stream::{ProviderStream, poll_read_plain};

/// How a request's body is delimited on the provider's connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// Whether `name` (in any case) is one of the headers that belong to one connection, never
/// forwarded either way (RFC 9110, 7.6.1). Its length picks the one or two names it could be,
/// so that most names are dismissed by their length alone (every header of a call goes through
/// here).
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    let candidates: &[&[u8]] = match name.len() {
        2 => &[b"te"],
        7 => &[b"trailer", b"upgrade"],
        10 => &[b"connection", b"keep-alive"],
        16 => &[b"proxy-connection"],
        17 => &[b"transfer-encoding"],
        18 => &[b"proxy-authenticate"],
        19 => &[b"proxy-authorization"],
        _ => return false,
    };
    candidates
        .iter()
        .any(|candidate| candidate.eq_ignore_ascii_case(name))
}

/// The request line, in origin form: `base_path/tail?query`.
pub fn write_request_line(
    out: &mut Vec<u8>,
    method: &http::Method,
    base_path: &str,
    tail: &str,
    query: Option<&str>,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(base_path.as_bytes());
    out.push(b'/');
    out.extend_from_slice(tail.as_bytes());
    if let Some(query) = query {
        out.push(b'?');
        out.extend_from_slice(query.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
}

pub fn write_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The body's framing header and the blank line that ends the head.
pub fn end_head(out: &mut Vec<u8>, framing: BodyFraming) {
    match framing {
        BodyFraming::None => {}
        BodyFraming::Length(length) => {
            write_header(
                out,
                b"content-length",
                itoa::Buffer::new().format(length).as_bytes(),
            );
        }
        BodyFraming::Chunked => write_header(out, b"transfer-encoding", b"chunked"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Where a piece of a head (a name, a value, the path) lies in the buffer it was parsed from:
/// noted while the parser borrows the buffer, used once the head has been taken out of it
/// (the head keeps its offsets: it is the buffer's start). Heads are parsed on every call, so
/// these are kept on the stack.
#[derive(Clone, Copy, Debug, Default)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// `piece` must lie inside `buffer`.
    pub fn of(buffer: &[u8], piece: &[u8]) -> Span {
        let start = piece.as_ptr() as usize - buffer.as_ptr() as usize;
        debug_assert!(start + piece.len() <= buffer.len());
        Span {
            start: start as u32,
            end: (start + piece.len()) as u32,
        }
    }

    pub fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// A chunk's size line.
pub fn write_chunk_size(out: &mut Vec<u8>, size: usize) {
    // Written into `out` itself: no string is made for it.
    let _ = write!(out, "{size:x}\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_names_are_found_in_any_case_and_no_others() {
        for name in [
            "Connection",
            "keep-alive",
            "Proxy-Authenticate",
            "proxy-authorization",
            "TE",
            "trailer",
            "Transfer-Encoding",
            "upgrade",
            "proxy-connection",
        ] {
            assert!(is_hop_by_hop(name.as_bytes()), "{name}");
        }
        for other in [
            "host",
            "x-api-key",
            "content-length",
            "tee",
            "upgrade-insecure-requests",
            "t",
        ] {
            assert!(!is_hop_by_hop(other.as_bytes()), "{other}");
        }
    }

    #[test]
    fn a_request_head_is_written_in_origin_form_with_its_framing() {
        let mut out = Vec::new();
        write_request_line(
            &mut out,
            &http::Method::POST,
            "/base",
            "v2/items",
            Some("q=1"),
        );
        write_header(&mut out, b"host", b"example.com");
        end_head(&mut out, BodyFraming::Length(12));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /base/v2/items?q=1 HTTP/1.1\r\nhost: example.com\r\ncontent-length: 12\r\n\r\n"
        );
        let mut out = Vec::new();
        write_chunk_size(&mut out, 255);
        end_head(&mut out, BodyFraming::Chunked);
        assert_eq!(out, b"ff\r\ntransfer-encoding: chunked\r\n\r\n");
    }
}
