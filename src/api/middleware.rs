//! The outermost middleware: decides the request context, runs the rest of the service inside
//! it, is the panic guard, and makes sure that no error leaves the service without the envelope.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::HeaderValue;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, ResponseError};
use futures_util::FutureExt;

use super::catalogue::Code;
use super::error::{ApiError, Rendered};
use super::request::{self, REQUEST_ID_HEADER, RequestContext, request_context};

/// The outermost middleware: decides the context, runs the rest of the service inside it,
/// turns a panic into a 500 envelope, renders the envelope for errors made by the framework
/// itself (unknown method, for one) and sets `X-Request-Id` on every response.
pub async fn request_context_middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let context = RequestContext::of(&req);
    req.extensions_mut().insert(context.clone());
    let request_id = context.request_id.clone();

    // The request cannot be cloned before routing, so an answer made without it (a panic, an
    // error that escaped every handler) is returned as an error carrying the context: the
    // server renders it through `ApiError` all the same.
    let outcome = in_request(context.clone(), async move {
        match next.call(req).await {
            Ok(response) => Ok(ensure_envelope(response.map_into_boxed_body())),
            Err(error) => {
                let status = error.as_response_error().status_code();
                let mut api_error = ApiError::new(Code::for_status(status.as_u16()));
                if status.is_client_error() {
                    api_error = api_error.with_detail(error.to_string());
                }
                Err(api_error)
            }
        }
    })
    .await;

    match outcome {
        Ok(mut response) => {
            if let Ok(value) = HeaderValue::from_str(&request_id) {
                response.headers_mut().insert(REQUEST_ID_HEADER, value);
            }
            Ok(response)
        }
        Err(error) => Err(error.in_context(context).into()),
    }
}

/// Runs `work` as the request of `context` (readable through `request_context`), a panic
/// turned into a 500 error: the guard of every request, whichever server path it takes. Made of
/// combinators rather than an `async` block, which would keep `work` twice in its state.
pub fn in_request<T>(
    context: RequestContext,
    work: impl Future<Output = Result<T, ApiError>>,
) -> impl Future<Output = Result<T, ApiError>> {
    let guarded = AssertUnwindSafe(work)
        .catch_unwind()
        .map(|outcome| match outcome {
            Ok(outcome) => outcome,
            Err(panic) => {
                tracing::error!(request_id = %request_context().request_id,
                        panic = %panic_message(&panic), "handler panicked");
                Err(ApiError::internal(anyhow::anyhow!("handler panicked")))
            }
        });
    request::scope(context, guarded)
}

/// An error response that did not come from `ApiError` (the framework's own 404/405, an
/// extractor without our config) gets the envelope for its status.
fn ensure_envelope(response: ServiceResponse<BoxBody>) -> ServiceResponse<BoxBody> {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.response().extensions().contains::<Rendered>()
    {
        return response;
    }
    let code = Code::for_status(status.as_u16());
    let detail = match (status.is_client_error(), response.response().error()) {
        (true, Some(error)) if code == Code::BAD_REQUEST => Some(error.to_string()),
        _ => None,
    };
    let mut error = ApiError::new(code);
    if let Some(detail) = detail {
        error = error.with_detail(detail);
    }
    let (request, _) = response.into_parts();
    ServiceResponse::new(request, error.error_response())
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        String::from("non-string panic payload")
    }
}
