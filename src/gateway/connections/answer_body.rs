//! The provider's answer body, read from its connection's buffer as it fills.

use std::io;
use std::task::{Context, Poll, ready};

use actix_web::web::Bytes;

use super::POOL;
use super::exchange::ProviderConnection;
use crate::gateway::wire::{Chunked, Framing, Step};

/// The answer's body as it is read from its connection; read to its end, the connection goes
/// back to the pool (when the answer let it be reused), and dropped before, it closes.
pub struct UpstreamBody {
    /// None once the body ended (or failed).
    connection: Option<ProviderConnection>,
    state: BodyState,
    reusable: bool,
    declared: Option<u64>,
}

enum BodyState {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
    Done,
}

impl UpstreamBody {
    pub(super) fn new(
        connection: ProviderConnection,
        framing: Framing,
        reusable: bool,
    ) -> UpstreamBody {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => BodyState::Done,
            Framing::Length(length) => BodyState::Length(length),
            Framing::Chunked => BodyState::Chunked(Chunked::Size),
            Framing::UntilClose => BodyState::UntilClose,
        };
        let declared = match framing {
            Framing::Empty => Some(0),
            Framing::Length(length) => Some(length),
            Framing::Chunked | Framing::UntilClose => None,
        };
        let mut body = UpstreamBody {
            connection: Some(connection),
            state,
            reusable,
            declared,
        };
        if matches!(body.state, BodyState::Done) {
            body.finish();
        }
        body
    }

    /// The body's length, when the answer declared one (none for a chunked body, or one that
    /// runs to the close).
    pub fn declared(&self) -> Option<u64> {
        self.declared
    }

    /// Whether the whole body has been read (what is left is in hand).
    pub fn is_end(&self) -> bool {
        matches!(self.state, BodyState::Done)
    }

    /// The body ended: its connection goes back to the pool if nothing else came with it.
    fn finish(&mut self) {
        self.state = BodyState::Done;
        if let Some(connection) = self.connection.take()
            && self.reusable
            && connection.buffer.is_empty()
        {
            // Off a worker (never, but harmless): the connection is simply closed.
            let _ = POOL.try_with(|pool| pool.borrow_mut().put(connection));
        }
    }

    fn fail(&mut self, why: String) -> Poll<Option<io::Result<Bytes>>> {
        self.state = BodyState::Done;
        self.connection = None;
        Poll::Ready(Some(Err(io::Error::other(why))))
    }

    /// The next chunk of data; None at the end.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            let Some(connection) = self.connection.as_mut() else {
                return Poll::Ready(None);
            };
            let buffer = &mut connection.buffer;
            match &mut self.state {
                BodyState::Done => return Poll::Ready(None),
                BodyState::Length(left) if !buffer.is_empty() => {
                    let take = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(buffer.len());
                    let data = buffer.split_to(take).freeze();
                    *left -= take as u64;
                    if *left == 0 {
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                BodyState::UntilClose if !buffer.is_empty() => {
                    return Poll::Ready(Some(Ok(buffer.split().freeze())));
                }
                BodyState::Chunked(decoder) => match decoder.step(buffer) {
                    Ok(Step::Data(data)) => {
                        match decoder.ended(buffer) {
                            Ok(true) => self.finish(),
                            Ok(false) => {}
                            Err(why) => return self.fail(why),
                        }
                        return Poll::Ready(Some(Ok(data)));
                    }
                    Ok(Step::Done) => {
                        self.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Step::NeedMore) => {}
                    Err(why) => return self.fail(why),
                },
                BodyState::Length(_) | BodyState::UntilClose => {}
            }
            // The buffer holds nothing more of the body: read.
            let connection = self.connection.as_mut().expect("checked above");
            match ready!(connection.stream.poll_read_into(&mut connection.buffer, cx)) {
                Ok(0) if matches!(self.state, BodyState::UntilClose) => {
                    self.reusable = false;
                    self.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => return self.fail("closed before the body's end".to_owned()),
                Ok(_) => {}
                Err(error) => return self.fail(error.to_string()),
            }
        }
    }
}
