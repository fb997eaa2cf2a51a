//! One request and its answer's head on a provider connection: the head (and the body as the
//! client sends it) written, the answer's head read and parsed.

use std::future::poll_fn;
use std::io;

use bytes::BytesMut;
use futures_util::FutureExt;
use http_body_util::BodyExt;

use super::RequestBody;
use crate::gateway::wire::{self, BodyFraming, ProviderStream, ResponseHead};

/// The most an answer's head may hold.
const MAX_HEAD: usize = 64 * 1024;
/// Request body bytes gathered before they are written; a larger chunk is written as it is.
const WRITE_BATCH: usize = 64 * 1024;
const WRITE_DIRECT: usize = 16 * 1024;

/// Why an exchange failed: before any of the answer arrived (the request may go again), or
/// after.
pub(super) enum Failure {
    Unanswered(String),
    Broken(String),
}

/// A connection to a provider, with what was read from it and not yet used.
pub struct ProviderConnection {
    pub(super) stream: ProviderStream,
    pub(super) buffer: BytesMut,
    /// Its pool's slot (its origin's).
    pub(super) slot: usize,
}

impl ProviderConnection {
    pub(super) fn new(stream: ProviderStream, slot: usize) -> ProviderConnection {
        ProviderConnection {
            stream,
            buffer: BytesMut::new(),
            slot,
        }
    }

    pub(super) async fn exchange(
        &mut self,
        head: &[u8],
        body: Option<(&mut RequestBody, BodyFraming)>,
        to_head: bool,
    ) -> Result<ResponseHead, Failure> {
        match body {
            None => self
                .stream
                .write_all(head)
                .await
                .map_err(|error| Failure::Unanswered(format!("sending the request: {error}")))?,
            Some((body, framing)) => self.write_with_body(head, body, framing).await?,
        }
        loop {
            if !self.buffer.is_empty()
                && let Some(answer) =
                    wire::parse_response_head(&mut self.buffer, to_head).map_err(Failure::Broken)?
            {
                return Ok(answer);
            }
            if self.buffer.len() > MAX_HEAD {
                return Err(Failure::Broken(format!(
                    "an answer head larger than {MAX_HEAD} bytes"
                )));
            }
            let read = poll_fn(|cx| self.stream.poll_read_into(&mut self.buffer, cx)).await;
            match read {
                Ok(0) if self.buffer.is_empty() => {
                    return Err(Failure::Unanswered("closed without an answer".to_owned()));
                }
                Ok(0) => {
                    return Err(Failure::Broken(
                        "closed within the answer's head".to_owned(),
                    ));
                }
                Ok(_) => {}
                Err(error) if self.buffer.is_empty() => {
                    return Err(Failure::Unanswered(format!("reading the answer: {error}")));
                }
                Err(error) => return Err(Failure::Broken(format!("reading the answer: {error}"))),
            }
        }
    }

    /// Writes the head and the body as the client sends it: what is there at once goes out
    /// with the head in one write. A body that fails or ends short on the client's side ends
    /// the exchange unfinished, so the provider never takes a cut body for a whole one.
    async fn write_with_body(
        &mut self,
        head: &[u8],
        body: &mut RequestBody,
        framing: BodyFraming,
    ) -> Result<(), Failure> {
        let broken = |error: io::Error| Failure::Broken(format!("sending the request: {error}"));
        let mut out = Vec::with_capacity(head.len() + 1024);
        out.extend_from_slice(head);
        let mut sent = 0u64;
        let chunked = framing == BodyFraming::Chunked;
        loop {
            let frame = match body.frame().now_or_never() {
                Some(frame) => frame,
                None => {
                    if !out.is_empty() {
                        self.stream.write_all(&out).await.map_err(broken)?;
                        out.clear();
                    }
                    body.frame().await
                }
            };
            let data = match frame {
                None => break,
                Some(Err(error)) => {
                    return Err(Failure::Broken(format!(
                        "the client's body failed: {error}"
                    )));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => data,
                    _ => continue,
                },
            };
            sent += data.len() as u64;
            if let BodyFraming::Length(length) = framing
                && sent > length
            {
                return Err(Failure::Broken(
                    "the client's body is longer than it said".into(),
                ));
            }
            if chunked {
                wire::write_chunk_size(&mut out, data.len());
            }
            if data.len() >= WRITE_DIRECT {
                self.stream.write_all(&out).await.map_err(broken)?;
                out.clear();
                self.stream.write_all(&data).await.map_err(broken)?;
            } else {
                out.extend_from_slice(&data);
            }
            if chunked {
                out.extend_from_slice(b"\r\n");
            }
            if out.len() >= WRITE_BATCH {
                self.stream.write_all(&out).await.map_err(broken)?;
                out.clear();
            }
        }
        if let BodyFraming::Length(length) = framing
            && sent != length
        {
            return Err(Failure::Broken("the client's body ended short".into()));
        }
        if chunked {
            out.extend_from_slice(b"0\r\n\r\n");
        }
        self.stream.write_all(&out).await.map_err(broken)
    }
}
