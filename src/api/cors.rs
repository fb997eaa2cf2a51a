//! Cross-origin access for browsers (`CORS_ALLOWED_ORIGINS`, `CORS_GATEWAY`), written by
//! `actix-cors`. It wraps the whole service, outside the request-context middleware, so every
//! answer it lets through (the envelope of an error, a panic's 500, the framework's 404) carries
//! the CORS headers, or a browser would hide it from the page.
//!
//! A small switch in front of `actix-cors` decides per request whether CORS applies at all: an
//! allowed origin on a path open to browsers (`/myapi/...` except the webhooks; the gateway only
//! with `CORS_GATEWAY=true`). Everything else (no `Origin`, another origin, `/metrics`, the
//! webhooks, a preflight asking for a method or header the API does not take) is answered
//! exactly as without CORS: no CORS header, and never `actix-cors`'s bare 400.

use std::rc::Rc;
use std::sync::Arc;

use actix_cors::{Cors, CorsMiddleware};
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use futures_util::future::LocalBoxFuture;

use super::request::{REQUEST_ID_HEADER, RequestContext};
use crate::config::{AllowedOrigins, CorsSettings};

/// The methods of the API.
const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

/// The request headers the contract uses.
const REQUEST_HEADERS: [HeaderName; 5] = [
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    HeaderName::from_static("x-lang"),
    HeaderName::from_static("idempotency-key"),
    HeaderName::from_static("x-request-id"),
];

/// The response headers a page may read.
const EXPOSED_HEADERS: [HeaderName; 5] = [
    HeaderName::from_static("x-request-id"),
    header::RETRY_AFTER,
    HeaderName::from_static("x-ratelimit-limit"),
    HeaderName::from_static("x-ratelimit-remaining"),
    HeaderName::from_static("x-credits-remaining"),
];

/// How long a browser may reuse a preflight's answer (Chromium caps it at two hours).
const PREFLIGHT_MAX_AGE_SECS: usize = 3600;

/// The middleware for `App::wrap`, built once from the settings; with no origin configured it
/// changes nothing.
pub fn cors(settings: &CorsSettings) -> CrossOrigin {
    let open = match &settings.allowed_origins {
        AllowedOrigins::Listed(origins) => !origins.is_empty(),
        AllowedOrigins::Any => true,
    };
    CrossOrigin {
        settings: open.then(|| Arc::new(settings.clone())),
    }
}

/// Cloned into every worker (`actix-cors`'s own middleware is not `Send`, so each worker builds
/// it from the settings).
#[derive(Clone)]
pub struct CrossOrigin {
    settings: Option<Arc<CorsSettings>>,
}

fn actix_cors(settings: &CorsSettings) -> Cors {
    // Credentials (cookies) are never allowed: the session travels in `Authorization`.
    let cors = Cors::default()
        .allowed_methods(METHODS)
        .allowed_headers(REQUEST_HEADERS)
        .expose_headers(EXPOSED_HEADERS)
        .max_age(PREFLIGHT_MAX_AGE_SECS)
        .block_on_origin_mismatch(false);
    match &settings.allowed_origins {
        AllowedOrigins::Any => cors.allow_any_origin().send_wildcard(),
        AllowedOrigins::Listed(origins) => origins
            .iter()
            .fold(cors, |cors, origin| cors.allowed_origin(origin)),
    }
}

impl<S, B> Transform<S, ServiceRequest> for CrossOrigin
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = actix_web::Error;
    type Transform = CrossOriginMiddleware<S>;
    type InitError = ();
    type Future = LocalBoxFuture<'static, Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        let service = Rc::new(service);
        let settings = self.settings.clone();
        Box::pin(async move {
            let cors = match &settings {
                Some(settings) => Some(actix_cors(settings).new_transform(service.clone()).await?),
                None => None,
            };
            Ok(CrossOriginMiddleware {
                service,
                cors: settings.zip(cors),
            })
        })
    }
}

#[doc(hidden)]
pub struct CrossOriginMiddleware<S> {
    service: Rc<S>,
    cors: Option<(Arc<CorsSettings>, CorsMiddleware<Rc<S>>)>,
}

impl<S, B> Service<ServiceRequest> for CrossOriginMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        match &self.cors {
            Some((settings, cors)) if applies(settings, &req) => {
                let preflight = is_preflight(&req);
                // A preflight is answered here, before the request-context middleware: it
                // gets its request id here.
                let request_id = RequestContext::of(&req).request_id;
                let response = cors.call(req);
                Box::pin(async move {
                    let mut response = response.await?.map_into_boxed_body();
                    // actix-cors answers an accepted preflight 200 with no body; the contract
                    // says 204.
                    if preflight && response.status() == StatusCode::OK {
                        *response.response_mut().status_mut() = StatusCode::NO_CONTENT;
                    }
                    if !response.headers().contains_key(REQUEST_ID_HEADER)
                        && let Ok(value) = HeaderValue::from_str(&request_id)
                    {
                        response.headers_mut().insert(REQUEST_ID_HEADER, value);
                    }
                    Ok(response)
                })
            }
            _ => {
                let response = self.service.call(req);
                Box::pin(async move { Ok(response.await?.map_into_boxed_body()) })
            }
        }
    }
}

/// Whether `actix-cors` sees the request: an allowed origin, a path open to browsers and, for a
/// preflight, a method and headers it will accept.
fn applies(settings: &CorsSettings, req: &ServiceRequest) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return false;
    };
    let allowed = match &settings.allowed_origins {
        AllowedOrigins::Any => true,
        AllowedOrigins::Listed(origins) => {
            origins.iter().any(|o| o.as_bytes() == origin.as_bytes())
        }
    };
    // The path as the router matches it (percent-decoded).
    let path = req.match_info().as_str();
    let under = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    let open_path =
        (under("/myapi") && !under("/myapi/webhooks")) || (settings.gateway && under("/api/v1"));
    allowed && open_path && (!is_preflight(req) || preflight_acceptable(req))
}

/// `actix-cors`'s notion of a preflight: `OPTIONS` with a valid `Access-Control-Request-Method`.
fn is_preflight(req: &ServiceRequest) -> bool {
    req.method() == Method::OPTIONS && requested_method(req).is_some()
}

fn requested_method(req: &ServiceRequest) -> Option<Method> {
    let value = req.headers().get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
    Method::from_bytes(value.as_bytes()).ok()
}

/// A preflight that `actix-cors` would refuse with its 400 goes on as an ordinary request.
fn preflight_acceptable(req: &ServiceRequest) -> bool {
    let method_ok = requested_method(req).is_some_and(|method| METHODS.contains(&method));
    let headers_ok = match req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        None => true,
        Some(value) => value.to_str().is_ok_and(|list| {
            list.split(',').all(|name| {
                HeaderName::try_from(name.trim()).is_ok_and(|name| REQUEST_HEADERS.contains(&name))
            })
        }),
    };
    method_ok && headers_ok
}
