//! Where a request goes: a metered call (`/api/v1/...`) is answered here, in hyper's types from
//! the client's socket to the provider's and back (most of them come from the server's own
//! path, `lean`, the others from hyper's server); everything else by the actix application.
//! A call from a browser of an allowed origin goes through the application when `CORS_GATEWAY`
//! is on, so that its CORS headers and preflights are written in one place.
//!
//! What the application's middleware does for every request is done here for a metered call
//! too: the request context (request id, language) around the work, the panic guard, the
//! envelope of an error, `X-Request-Id` on the answer and the request's metrics.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use actix_web::{ResponseError, web};
use http::HeaderValue;
use hyper::body::Incoming;

use super::actix_app::{Answer, AppService, ServedBody, from_actix, to_actix};
use crate::api::{HYPER_REQUEST_ID, RequestContext, in_request};
use crate::gateway::{Call, CallBody, GatewayState, meter_call};
use crate::ops::metrics::HttpMetrics;
use crate::state::AppState;

/// What a worker needs to answer metered calls itself.
#[derive(Clone)]
pub struct Gateway {
    pub state: web::Data<AppState>,
    pub gateway: Arc<GatewayState>,
    pub metrics: web::Data<HttpMetrics>,
}

/// A worker's way of answering a request.
pub(super) struct Front {
    pub app: AppService,
    pub gateway: Gateway,
    /// `CORS_GATEWAY`: a call that names an `Origin` is the application's.
    pub browsers_through_app: bool,
}

impl Front {
    pub fn new(app: AppService, gateway: Gateway) -> Front {
        let browsers_through_app = gateway.state.settings.cors.gateway;
        Front {
            app,
            gateway,
            browsers_through_app,
        }
    }

    pub async fn answer(
        self: Rc<Self>,
        request: http::Request<Incoming>,
        peer: SocketAddr,
    ) -> Answer {
        let names_origin = request.headers().contains_key(http::header::ORIGIN);
        if is_metered(
            request.uri().path(),
            names_origin,
            self.browsers_through_app,
        ) {
            let (head, body) = request.into_parts();
            self.gateway
                .answer(head, CallBody::Incoming(body), peer)
                .await
        } else {
            (self.app)(to_actix(request, peer)).await
        }
    }
}

/// Whether a request is a metered call that the gateway answers itself: under `/api/v1/`, and
/// not a browser's call (one that names an `Origin`) that `CORS_GATEWAY` sends through the
/// application. Both server paths decide by it.
pub(super) fn is_metered(path: &str, names_origin: bool, browsers_through_app: bool) -> bool {
    path.starts_with("/api/v1/") && !(browsers_through_app && names_origin)
}

impl Gateway {
    /// A metered call, from hyper's server or the server's own path (`lean`).
    pub(super) async fn answer(
        &self,
        head: http::request::Parts,
        body: CallBody,
        peer: SocketAddr,
    ) -> Answer {
        let started = Instant::now();
        let context = RequestContext::of_head(&head);
        let request_id = HeaderValue::from_str(&context.request_id).ok();
        let method = head.method.clone();
        let call = Call {
            head,
            peer: Some(peer),
            body,
        };
        let lang = context.lang;
        let answer = in_request(context, async {
            match meter_call(&self.state, &self.gateway, call).await {
                Ok(answer) => Ok(answer.map(ServedBody::Forwarded)),
                // Rendered in the request's context: the envelope names its id and language.
                Err(error) => Ok(from_actix(error.error_response().into())),
            }
        })
        .await;
        let mut answer = answer.unwrap_or_else(|panic| {
            // The context went into the call's scope (not copied for a case this rare): the
            // envelope of a panic takes it back from the answer's id.
            let request_id = request_id.as_ref().and_then(|id| id.to_str().ok());
            let context = RequestContext {
                request_id: request_id.unwrap_or("-").to_owned(),
                lang,
            };
            from_actix(panic.in_context(context).error_response().into())
        });
        if let Some(request_id) = request_id {
            answer.headers_mut().insert(HYPER_REQUEST_ID, request_id);
        }
        self.metrics
            .record_gateway_call(method.as_str(), answer.status().as_u16(), started);
        answer
    }
}
