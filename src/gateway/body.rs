//! The provider's response body under its provider's limits: the first chunk is awaited before
//! the client hears anything, so a body that stalls or is too large from the start is a plain
//! 50201 (not charged); past the first chunk, the same limits cut the stream (the client sees a
//! broken body, never a complete-looking short one) and the cut is logged.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::web::Bytes;
use futures_util::{Stream, StreamExt};
use http_body_util::BodyDataStream;
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::providers::BodyLimits;
use crate::api::request_context;

type Chunks = BodyDataStream<Incoming>;

/// An upstream answer whose body has started within its limits.
pub struct StartedBody {
    /// The upstream's status and headers.
    pub head: http::response::Parts,
    rest: Chunks,
    /// The first chunk, already read; None for an empty body.
    first: Option<Bytes>,
    limits: BodyLimits,
    deadline: Instant,
    slug: String,
    /// For the log line of a body cut after the handler returned (outside its request's context).
    request_id: String,
}

/// Waits for the first chunk of `response`'s body within `limits`, `started` being when the
/// call began. The error says why, for the 50201's log line.
pub async fn start(
    response: hyper::Response<Incoming>,
    limits: BodyLimits,
    started: Instant,
    slug: &str,
) -> Result<StartedBody, String> {
    let (head, body) = response.into_parts();
    let mut rest = BodyDataStream::new(body);
    let max = u64::try_from(limits.max_response_bytes).unwrap_or(u64::MAX);
    let declared = head
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max) {
        return Err(format!("{slug}: the body is larger than {max} bytes"));
    }
    let deadline = started + millis(limits.body_deadline_ms);
    let wait = (Instant::now() + millis(limits.body_idle_ms)).min(deadline);
    let first = match tokio::time::timeout_at(wait, rest.next()).await {
        Err(_) => return Err(format!("{slug}: no body within its limits")),
        Ok(Some(Err(error))) => return Err(format!("{slug}: the body failed: {error}")),
        Ok(Some(Ok(chunk))) if chunk.len() as u64 > max => {
            return Err(format!("{slug}: the body is larger than {max} bytes"));
        }
        Ok(Some(Ok(chunk))) => Some(chunk),
        Ok(None) => None,
    };
    Ok(StartedBody {
        head,
        rest,
        first,
        limits,
        deadline,
        slug: slug.to_owned(),
        request_id: request_context().request_id,
    })
}

fn millis(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

impl StartedBody {
    /// The whole body as a stream: the first chunk, then the rest under the limits.
    pub fn into_body(self) -> GuardedBody {
        let sent = self.first.as_ref().map_or(0, |chunk| chunk.len() as u64);
        let idle = millis(self.limits.body_idle_ms);
        GuardedBody {
            first: self.first,
            rest: self.rest,
            sent,
            max: u64::try_from(self.limits.max_response_bytes).unwrap_or(u64::MAX),
            idle,
            deadline: self.deadline,
            timer: Box::pin(tokio::time::sleep_until(
                (Instant::now() + idle).min(self.deadline),
            )),
            slug: self.slug,
            request_id: self.request_id,
            done: false,
        }
    }
}

/// The rest of the body, ended with an error when a chunk is late, the call is past its
/// deadline, or the body grows past its maximum.
pub struct GuardedBody {
    first: Option<Bytes>,
    rest: Chunks,
    sent: u64,
    max: u64,
    idle: Duration,
    deadline: Instant,
    timer: Pin<Box<Sleep>>,
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
        match Pin::new(&mut this.rest).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.sent += chunk.len() as u64;
                if this.sent > this.max {
                    return this.cut("larger than its maximum");
                }
                let next = (Instant::now() + this.idle).min(this.deadline);
                this.timer.as_mut().reset(next);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(error))) => this.cut(&error.to_string()),
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) if Instant::now() >= this.deadline => this.cut("past its deadline"),
                Poll::Ready(()) => this.cut("no chunk within its idle timeout"),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}
