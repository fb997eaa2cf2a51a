//! The actix-web application behind the server: every request that is not a metered call. Each
//! worker builds its own copy (as actix's own server does) and calls it with the request carried
//! across from hyper's types to actix's (`http` 0.2: names, values, method and URI as bytes);
//! the answer comes back the same way, its body streamed as the application writes it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_service::{IntoServiceFactory, Service, ServiceFactory};
use actix_web::App;
use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{AppConfig, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::web::Bytes;
use futures_util::StreamExt;
use futures_util::future::LocalBoxFuture;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::api::headers;
use crate::gateway::ForwardedBody;

/// A worker's application: an actix request in, an answer in hyper's types out.
pub type AppService = Rc<dyn Fn(actix_http::Request) -> LocalBoxFuture<'static, Answer>>;

pub type Answer = http::Response<ServedBody>;

type MakeService = dyn Fn() -> LocalBoxFuture<'static, anyhow::Result<AppService>> + Send + Sync;

/// Builds a worker's copy of the application (on the worker's own thread).
#[derive(Clone)]
pub struct AppFactory(Arc<MakeService>);

impl AppFactory {
    pub fn new<F, T, B>(make: F) -> AppFactory
    where
        F: Fn() -> App<T> + Send + Sync + 'static,
        T: ServiceFactory<
                ServiceRequest,
                Config = (),
                Response = ServiceResponse<B>,
                Error = actix_web::Error,
                InitError = (),
            > + 'static,
        T::Future: 'static,
        B: MessageBody + 'static,
    {
        AppFactory(Arc::new(move || {
            let factory = make().into_factory();
            Box::pin(async move {
                let service = factory
                    .new_service(AppConfig::default())
                    .await
                    .map_err(|()| anyhow::anyhow!("the application failed to start"))?;
                let service = Rc::new(service);
                let call: AppService = Rc::new(move |request| {
                    let service = service.clone();
                    Box::pin(async move {
                        let response: actix_http::Response<BoxBody> =
                            match service.call(request).await {
                                Ok(response) => response.map_into_boxed_body().into(),
                                Err(error) => error.error_response().into(),
                            };
                        from_actix(response)
                    })
                });
                Ok(call)
            })
        }))
    }

    pub async fn build(&self) -> anyhow::Result<AppService> {
        (self.0)().await
    }
}

/// The body of an answer, whichever way it was made.
// A forwarded body holds its provider connection inline (socket and read buffer): moving a few
// hundred bytes costs less than the allocation that boxing it would add to every call.
#[allow(clippy::large_enum_variant)]
pub enum ServedBody {
    /// A provider's answer, relayed as it arrives.
    Forwarded(ForwardedBody),
    /// What the application wrote.
    App(BoxBody),
}

impl Body for ServedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            ServedBody::Forwarded(body) => Pin::new(body).poll_frame(cx),
            ServedBody::App(body) => Pin::new(body).poll_next(cx).map(|chunk| {
                chunk.map(|chunk| {
                    chunk
                        .map(Frame::data)
                        .map_err(|error| std::io::Error::other(error.to_string()))
                })
            }),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ServedBody::Forwarded(body) => body.is_end_stream(),
            ServedBody::App(body) => matches!(body.size(), BodySize::None | BodySize::Sized(0)),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ServedBody::Forwarded(body) => body.size_hint(),
            ServedBody::App(body) => match body.size() {
                BodySize::None => SizeHint::with_exact(0),
                BodySize::Sized(length) => SizeHint::with_exact(length),
                BodySize::Stream => SizeHint::default(),
            },
        }
    }
}

/// The request as the application reads it, with the client's address and its body streamed.
pub fn to_actix(request: http::Request<Incoming>, peer: SocketAddr) -> actix_http::Request {
    let (head, body) = request.into_parts();
    let payload = if body.is_end_stream() {
        actix_http::Payload::None
    } else {
        let chunks = body
            .into_data_stream()
            .map(|chunk| chunk.map_err(|error| PayloadError::Io(std::io::Error::other(error))));
        let chunks: actix_http::BoxedPayloadStream = Box::pin(chunks);
        actix_http::Payload::Stream { payload: chunks }
    };
    let mut request = actix_http::Request::with_payload(payload);
    let carried = request.head_mut();
    carried.method = actix_http::Method::from_bytes(head.method.as_str().as_bytes())
        .unwrap_or(actix_http::Method::GET);
    // The URI hyper parsed is valid for `http` 0.2 too (the same parser).
    carried.uri = actix_http::Uri::try_from(head.uri.to_string()).unwrap_or_default();
    carried.version = match head.version {
        http::Version::HTTP_10 => actix_http::Version::HTTP_10,
        _ => actix_http::Version::HTTP_11,
    };
    carried.peer_addr = Some(peer);
    headers::into_actix(&head.headers, &mut carried.headers);
    request
}

/// The application's answer in hyper's types.
pub fn from_actix(response: actix_http::Response<BoxBody>) -> Answer {
    let (head, body) = response.into_parts();
    let mut answer = http::Response::new(ServedBody::App(body));
    *answer.status_mut() = http::StatusCode::from_u16(head.status().as_u16())
        .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    headers::into_http1(head.headers(), answer.headers_mut());
    answer
}
