//! The request context: the request id and the language of `msg`, decided once per request by
//! the outermost middleware and readable anywhere below it. The same middleware is the panic
//! guard and makes sure that no error leaves the service without the envelope.

use std::panic::AssertUnwindSafe;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, ResponseError};

use futures_util::FutureExt;

use super::catalogue::{Code, Lang};
use super::error::{ApiError, Rendered};

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");
const LANG_HEADER: &str = "x-lang";

tokio::task_local! {
    static CONTEXT: RequestContext;
}

/// What every part of a request's handling may need to know about the request itself.
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub request_id: String,
    pub lang: Lang,
}

/// The context of the request being served; outside a request (a background task, a unit test)
/// a placeholder id and English.
pub fn request_context() -> RequestContext {
    CONTEXT
        .try_with(Clone::clone)
        .unwrap_or_else(|_| RequestContext {
            request_id: String::from("-"),
            lang: Lang::En,
        })
}

impl RequestContext {
    fn of(req: &ServiceRequest) -> RequestContext {
        let request_id = req
            .headers()
            .get(&REQUEST_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .filter(|id| is_acceptable_request_id(id))
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let from_query = form_urlencoded::parse(req.query_string().as_bytes())
            .find(|(key, _)| key == "lang")
            .and_then(|(_, value)| Lang::parse(&value));
        let from_header = || {
            req.headers()
                .get(LANG_HEADER)
                .and_then(|value| value.to_str().ok())
                .and_then(Lang::parse)
        };
        let lang = from_query.or_else(from_header).unwrap_or_default();
        RequestContext { request_id, lang }
    }
}

/// A client's id is echoed only when it is short and plain, so it can neither forge log lines
/// nor bloat them.
fn is_acceptable_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

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
    let outcome = CONTEXT
        .scope(context.clone(), async move {
            match AssertUnwindSafe(next.call(req)).catch_unwind().await {
                Ok(Ok(response)) => Ok(ensure_envelope(response.map_into_boxed_body())),
                Ok(Err(error)) => {
                    let status = error.as_response_error().status_code();
                    let mut api_error = ApiError::new(Code::for_status(status.as_u16()));
                    if status.is_client_error() {
                        api_error = api_error.with_detail(error.to_string());
                    }
                    Err(api_error)
                }
                Err(panic) => {
                    tracing::error!(request_id = %request_context().request_id,
                        panic = %panic_message(&panic), "handler panicked");
                    Err(ApiError::internal(anyhow::anyhow!("handler panicked")))
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

#[cfg(test)]
mod tests {
    use super::is_acceptable_request_id;

    #[test]
    fn request_ids_that_could_forge_log_lines_are_replaced() {
        assert!(is_acceptable_request_id("abc-123_x.y:z"));
        assert!(!is_acceptable_request_id("abc\ndef"));
        assert!(!is_acceptable_request_id(""));
        assert!(!is_acceptable_request_id(&"a".repeat(129)));
    }
}
