//! A metered call as it arrived: its head in `http` 1.x terms (the types hyper speaks on both
//! sides of the gateway), the client's address and its body. The HTTP server hands one over
//! as it parsed it, without a copy; a call that came through actix (a browser's call, with
//! `CORS_GATEWAY`) is carried across once, here.

use std::net::SocketAddr;

use actix_web::HttpRequest;
use actix_web::web::{self, Bytes};
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};

use super::connections::RequestBody;
use crate::api::{ApiError, headers};

/// How many chunks of a request body wait in the pipe before the reader waits.
const BODY_PIPE_CHUNKS: usize = 8;

pub struct Call {
    pub head: http::request::Parts,
    pub peer: Option<SocketAddr>,
    pub body: CallBody,
}

/// The client's request body, not read yet.
pub enum CallBody {
    /// None: the server's own path takes only calls without one.
    None,
    /// As hyper's server reads it.
    Incoming(Incoming),
    /// As actix reads it (bound to its worker thread).
    Actix(web::Payload),
}

impl CallBody {
    /// The body as the provider's connection sends it. A body that fails on the client's side
    /// ends the provider's with an error, so the provider never takes a cut body for a whole one.
    pub fn into_request_body(self) -> RequestBody {
        match self {
            CallBody::None => CallBody::empty(),
            CallBody::Incoming(body) => body.map_err(std::io::Error::other).boxed(),
            CallBody::Actix(payload) => piped(payload),
        }
    }

    /// Nothing to send.
    pub fn empty() -> RequestBody {
        Empty::new().map_err(|never| match never {}).boxed()
    }
}

impl Call {
    /// A call that came through actix: its head carried across from actix's `http` 0.2 types
    /// (names, values and the method as bytes).
    pub fn from_actix(req: &HttpRequest, payload: web::Payload) -> Result<Call, ApiError> {
        let mut head = http::Request::new(()).into_parts().0;
        head.method = http::Method::from_bytes(req.method().as_str().as_bytes())
            .map_err(|error| ApiError::bad_request(error.to_string()))?;
        head.uri = http::Uri::try_from(req.uri().to_string())
            .map_err(|error| ApiError::bad_request(error.to_string()))?;
        headers::into_http1(req.headers(), &mut head.headers);
        Ok(Call {
            head,
            peer: req.peer_addr(),
            body: CallBody::Actix(payload),
        })
    }
}

/// actix's request body is bound to its worker thread, while hyper's client wants a `Send`
/// body: it is read by a task on the same worker and handed over through a channel.
fn piped(mut payload: web::Payload) -> RequestBody {
    let (sender, receiver) =
        tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(BODY_PIPE_CHUNKS);
    tokio::task::spawn_local(async move {
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|error| std::io::Error::other(error.to_string()));
            let failed = chunk.is_err();
            if sender.send(chunk).await.is_err() || failed {
                break;
            }
        }
    });
    let chunks = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let chunk = receiver.recv().await?;
        Some((chunk.map(Frame::data), receiver))
    });
    BodyExt::boxed(StreamBody::new(chunks))
}
