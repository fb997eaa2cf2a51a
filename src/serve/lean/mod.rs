//! The server's own path for metered calls: a client connection is read here first, and as
//! long as its requests are metered calls of the common shape (HTTP/1.1, under `/api/v1/`, no
//! body: see `head.rs`) they are answered straight from the socket, the head parsed once and
//! the answer written from the provider's headers and the meters in one write. That saves
//! about 3,000 of the 40,000 instructions a call took through hyper's general server
//! (`bench/HISTORY.md`).
//!
//! The first request that is not of that shape hands the connection to hyper's server, with
//! the bytes read so far put back in front (`rewind.rs`): hyper serves it and the rest of the
//! connection, so every corner of HTTP/1 (bodies either way, `Expect`, upgrades, limits,
//! errors) stays hyper's.

mod answer;
mod date;
mod head;
mod rewind;

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::time::Instant;

pub(super) use rewind::Rewind;

use super::front::Front;
use crate::gateway::CallBody;
use crate::gateway::wire::poll_read_plain;
use head::Parsed;

/// How the connection left this path.
pub(super) enum Served {
    /// It ended (the client closed, asked to close, timed out, or the worker stops).
    Ended,
    /// hyper's server goes on with it, from these bytes (read, not yet served) on.
    Elsewhere(Bytes),
}

/// What the connection is waiting for next.
enum Waited {
    Read(io::Result<usize>),
    TimedOut,
    Stopping,
}

/// Serves metered calls on `stream` until it ends or meets a request that is hyper's.
/// `head_timeout`: how long a client may take from the end of one answer to the end of the
/// next request's head; `max_head`: past this many bytes without a whole head, hyper's server
/// takes it (and refuses it with its 431).
pub(super) async fn serve(
    stream: &mut TcpStream,
    peer: SocketAddr,
    front: &Front,
    stopping: &Cell<bool>,
    head_timeout: Duration,
    max_head: usize,
) -> io::Result<Served> {
    let mut buffer = BytesMut::new();
    let mut out = Vec::with_capacity(1024);
    // One timer for the connection, set again for each request only when it has to wait.
    let mut timer = pin!(tokio::time::sleep(head_timeout));
    loop {
        let mut timer_set = false;
        let (head, close) = loop {
            if !buffer.is_empty() {
                match head::parse(&mut buffer, front.browsers_through_app) {
                    Parsed::Call { head, close } => break (head, close),
                    Parsed::Partial if buffer.len() < max_head => {}
                    Parsed::Partial | Parsed::Elsewhere => {
                        return Ok(Served::Elsewhere(buffer.split().freeze()));
                    }
                }
            }
            let waited = std::future::poll_fn(|cx| {
                if stopping.get() {
                    return Poll::Ready(Waited::Stopping);
                }
                if let Poll::Ready(read) = poll_read_plain(stream, &mut buffer, cx) {
                    return Poll::Ready(Waited::Read(read));
                }
                if !timer_set {
                    timer.as_mut().reset(Instant::now() + head_timeout);
                    timer_set = true;
                }
                timer.as_mut().poll(cx).map(|()| Waited::TimedOut)
            })
            .await;
            match waited {
                Waited::Read(Ok(0)) | Waited::TimedOut | Waited::Stopping => {
                    return Ok(Served::Ended);
                }
                Waited::Read(Ok(_)) => {}
                Waited::Read(Err(error)) => return Err(error),
            }
        };
        let answer = front.gateway.answer(head, CallBody::None, peer).await;
        // A worker that began to stop during the call says so in its answer (as hyper's
        // server does), so the client sends its next request elsewhere.
        let close = close || stopping.get();
        answer::write(stream, &mut out, answer, close).await?;
        if close {
            return Ok(Served::Ended);
        }
    }
}
