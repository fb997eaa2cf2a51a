//! The provider's response body under its provider's limits: the first chunk is awaited before
//! the client hears anything, so a body that stalls or is too large from the start is a plain
//! 50201 (not charged); past the first chunk, the same limits cut the stream (the client sees a
//! broken body, never a complete-looking short one) and the cut is logged. A body read to its
//! end gives its connection back to the pool.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::web::Bytes;
use futures_util::Stream;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::connections::UpstreamBody;
use super::providers::BodyLimits;
use crate::api::request_context;

/// An upstream answer whose body has started within its limits.
pub struct StartedBody {
    /// The upstream's status and headers.
    pub head: http::response::Parts,
    rest: UpstreamBody,
    /// The first chunk, already read; None for an empty body.
    first: Option<Bytes>,
    /// The length the provider declared.
    declared: Option<u64>,
    limits: BodyLimits,
    deadline: Instant,
    slug: String,
    /// For the log line of a body cut after the handler returned (outside its request's context).
    request_id: String,
}

/// Waits for the first chunk of the answer's body within `limits`, `started` being when the
/// call began. The error says why, for the 50201's log line.
pub async fn start(
    head: http::response::Parts,
    mut rest: UpstreamBody,
    limits: BodyLimits,
    started: Instant,
    slug: &str,
) -> Result<StartedBody, String> {
    let max = u64::try_from(limits.max_response_bytes).unwrap_or(u64::MAX);
    let declared = rest.declared();
    if declared.is_some_and(|length| length > max) {
        return Err(format!("{slug}: the body is larger than {max} bytes"));
    }
    let deadline = started + millis(limits.body_deadline_ms);
    let wait = (Instant::now() + millis(limits.body_idle_ms)).min(deadline);
    let next = std::future::poll_fn(|cx| rest.poll_chunk(cx));
    let first = match tokio::time::timeout_at(wait, next).await {
        Err(_) => return Err(format!("{slug}: no body within its limits")),
        Ok(Some(Err(error))) => return Err(format!("{slug}: the body failed: {error}")),
        Ok(Some(Ok(chunk))) if chunk.len() as u64 > max => {
            return Err(format!("{slug}: the body is larger than {max} bytes"));
        }
        Ok(Some(Ok(chunk))) => Some(chunk),
        Ok(None) => None,
    };
    // Only a body with more to come can be cut, so only such a body keeps what its cut's log
    // line names (two copies fewer for an answer that came whole, as most do).
    let more = !rest.is_end();
    Ok(StartedBody {
        head,
        rest,
        first,
        declared,
        limits,
        deadline,
        slug: if more { slug.to_owned() } else { String::new() },
        request_id: if more {
            request_context().request_id
        } else {
            String::new()
        },
    })
}

fn millis(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

impl StartedBody {
    /// The upstream's head, and the whole body as the client's answer sends it: the first
    /// chunk, then the rest under the limits, with the length the provider declared.
    pub fn into_parts(self) -> (http::response::Parts, ForwardedBody) {
        let sent = self.first.as_ref().map_or(0, |chunk| chunk.len() as u64);
        let idle = millis(self.limits.body_idle_ms);
        let body = GuardedBody {
            first: self.first,
            rest: self.rest,
            sent,
            max: u64::try_from(self.limits.max_response_bytes).unwrap_or(u64::MAX),
            idle,
            deadline: self.deadline,
            timer: None,
            armed: false,
            slug: self.slug,
            request_id: self.request_id,
            done: false,
        };
        (self.head, ForwardedBody::new(body, self.declared))
    }
}

/// The body of a forwarded answer, with the length the provider declared: what hyper's server
/// sends (and declares) as it is.
pub struct ForwardedBody {
    body: GuardedBody,
    length: Option<u64>,
}

impl ForwardedBody {
    fn new(body: GuardedBody, length: Option<u64>) -> ForwardedBody {
        ForwardedBody { body, length }
    }

    pub fn into_parts(self) -> (GuardedBody, Option<u64>) {
        (self.body, self.length)
    }
}

impl Body for ForwardedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Pin::new(&mut self.get_mut().body)
            .poll_next(cx)
            .map(|chunk| chunk.map(|chunk| chunk.map(Frame::data)))
    }

    fn size_hint(&self) -> SizeHint {
        self.length
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

/// The rest of the body, ended with an error when a chunk is late, the call is past its
/// deadline, or the body grows past its maximum.
pub struct GuardedBody {
    first: Option<Bytes>,
    rest: UpstreamBody,
    sent: u64,
    max: u64,
    idle: Duration,
    deadline: Instant,
    /// Set when a chunk is first awaited (most answers end within their first read, and then
    /// no timer is ever made), re-armed when the next chunk is awaited after one arrived.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
    slug: String,
    request_id: String,
    done: bool,
}

impl GuardedBody {
    fn cut(&mut self, why: &str) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        self.done = true;
        tracing::warn!(request_id = %self.request_id, provider = %self.slug, sent = self.sent,
            "upstream body cut: {why}");
        Poll::Ready(Some(Err(std::io::Error::other(format!(
            "upstream body cut: {why}"
        )))))
    }
}

impl Stream for GuardedBody {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        match this.rest.poll_chunk(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.sent += chunk.len() as u64;
                if this.sent > this.max {
                    return this.cut("larger than its maximum");
                }
                this.armed = false;
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(error))) => this.cut(&error.to_string()),
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let (idle, deadline) = (this.idle, this.deadline);
                let wake = || (Instant::now() + idle).min(deadline);
                let timer = match &mut this.timer {
                    Some(timer) if this.armed => timer,
                    Some(timer) => {
                        timer.as_mut().reset(wake());
                        timer
                    }
                    None => this
                        .timer
                        .insert(Box::pin(tokio::time::sleep_until(wake()))),
                };
                this.armed = true;
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) if Instant::now() >= this.deadline => {
                        this.cut("past its deadline")
                    }
                    Poll::Ready(()) => this.cut("no chunk within its idle timeout"),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}
