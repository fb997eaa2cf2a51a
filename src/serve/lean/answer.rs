//! A metered call's answer written to the client: the head from the answer's map (the
//! provider's headers less the hop-by-hop ones, and the meters), the framing, and the body as
//! it comes; what a whole answer holds goes out in one write.

use std::io;
use std::pin::Pin;
use std::task::Poll;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Body;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::date;
use crate::gateway::wire::{BodyFraming, end_head, write_chunk_size, write_header};
use crate::serve::actix_app::Answer;

/// A chunk up to this size is copied behind the head (or the chunks before it) so that they go
/// out in one write; a larger one is written on its own.
const COPY_UP_TO: usize = 16 * 1024;
/// What waits to be written is written once it holds this much, even while the body has more
/// at hand: a body read faster than the client takes it is held no more than this.
const WRITE_AT: usize = 64 * 1024;

/// Writes `answer`; `close` adds `Connection: close` (the connection ends after it). An error:
/// the connection cannot go on (the client left, or the body failed half way: the client sees
/// a cut answer, never a whole-looking one).
pub(super) async fn write(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    answer: Answer,
    close: bool,
) -> io::Result<()> {
    let (head, mut body) = answer.into_parts();
    out.clear();
    write_status_line(out, head.status);
    let mut has_date = false;
    for (name, value) in &head.headers {
        if name == http::header::CONTENT_LENGTH || name == http::header::TRANSFER_ENCODING {
            continue;
        }
        has_date |= name == http::header::DATE;
        write_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !has_date {
        date::write_header(out);
    }
    if close {
        write_header(out, b"connection", b"close");
    }
    let status = head.status.as_u16();
    // No body may follow these, whatever the body says (RFC 9112, 6.3).
    if head.status.is_informational() || status == 204 || status == 304 {
        end_head(out, BodyFraming::None);
        return stream.write_all(out).await;
    }
    let framing = match body.size_hint().exact() {
        Some(length) => BodyFraming::Length(length),
        None => BodyFraming::Chunked,
    };
    end_head(out, framing);
    let mut left = match framing {
        BodyFraming::Length(length) => length,
        _ => u64::MAX,
    };
    while left > 0 && !body.is_end_stream() {
        // What the body holds now joins what waits to be written; only before waiting for
        // more is the waiting part written, so a body that came whole goes with its head.
        let polled =
            std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
        let frame = match polled {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                flush(stream, out).await?;
                body.frame().await
            }
        };
        let Some(frame) = frame else {
            break;
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) => {
                // What came before the failure goes out: the client sees the answer cut.
                flush(stream, out).await?;
                return Err(error);
            }
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers: not sent
        };
        if data.is_empty() {
            continue;
        }
        if framing == BodyFraming::Chunked {
            write_chunk_size(out, data.len());
        } else if data.len() as u64 > left {
            return Err(io::Error::other("the body is longer than its length"));
        } else {
            left -= data.len() as u64;
        }
        put(stream, out, data).await?;
        if framing == BodyFraming::Chunked {
            out.extend_from_slice(b"\r\n");
        }
    }
    match framing {
        BodyFraming::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
        _ if left > 0 => {
            flush(stream, out).await?;
            return Err(io::Error::other("the body is shorter than its length"));
        }
        _ => {}
    }
    flush(stream, out).await
}

fn write_status_line(out: &mut Vec<u8>, status: http::StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A small chunk is copied behind what waits; a large one is written after it, uncopied.
async fn put(stream: &mut TcpStream, out: &mut Vec<u8>, data: Bytes) -> io::Result<()> {
    if data.len() <= COPY_UP_TO {
        out.extend_from_slice(&data);
        if out.len() >= WRITE_AT {
            flush(stream, out).await?;
        }
        return Ok(());
    }
    flush(stream, out).await?;
    stream.write_all(&data).await
}

async fn flush(stream: &mut TcpStream, out: &mut Vec<u8>) -> io::Result<()> {
    if !out.is_empty() {
        stream.write_all(out).await?;
        out.clear();
    }
    Ok(())
}
