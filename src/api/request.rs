//! The request context: the request id and the language of `msg`, decided once per request by
//! the outermost middleware (`middleware.rs`) and readable anywhere below it.

use std::future::Future;

use actix_web::dev::ServiceRequest;
use actix_web::http::header::HeaderName;

use super::catalogue::Lang;

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");
const LANG_HEADER: &str = "x-lang";
/// The same two names in hyper's `http` 1.x types, built at compile time: a `&str` name is
/// parsed again on every look-up.
pub const HYPER_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");
const HYPER_LANG: http::HeaderName = http::HeaderName::from_static(LANG_HEADER);

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

/// Runs `work` with `context` as the request context. A plain function, not an `async` one: an
/// `async fn` that awaits a future it was given keeps that future twice in its own state, and
/// a metered call's future is large.
pub(super) fn scope<F: Future>(
    context: RequestContext,
    work: F,
) -> impl Future<Output = F::Output> {
    CONTEXT.scope(context, work)
}

impl RequestContext {
    pub(super) fn of(req: &ServiceRequest) -> RequestContext {
        let headers = req.headers();
        RequestContext::decide(
            headers
                .get(&REQUEST_ID_HEADER)
                .map(|value| value.as_bytes()),
            req.query_string(),
            headers.get(LANG_HEADER).map(|value| value.as_bytes()),
        )
    }

    /// The context of a request that the HTTP server answers without actix (a metered call).
    pub fn of_head(head: &http::request::Parts) -> RequestContext {
        let header = |name| head.headers.get(name).map(|value| value.as_bytes());
        RequestContext::decide(
            header(&HYPER_REQUEST_ID),
            head.uri.query().unwrap_or_default(),
            header(&HYPER_LANG),
        )
    }

    /// The client's request id when acceptable, else a new one; the language of `?lang=`, else
    /// of `X-Lang`, else English.
    fn decide(request_id: Option<&[u8]>, query: &str, lang: Option<&[u8]>) -> RequestContext {
        let request_id = request_id
            .and_then(|value| std::str::from_utf8(value).ok())
            .filter(|id| is_acceptable_request_id(id))
            .map(str::to_owned)
            // Encoded directly: `to_string` goes through the formatting machinery on every
            // request that brings no id of its own.
            .unwrap_or_else(|| {
                let mut buffer = uuid::Uuid::encode_buffer();
                uuid::Uuid::new_v4()
                    .hyphenated()
                    .encode_lower(&mut buffer)
                    .to_owned()
            });
        let from_query = || {
            form_urlencoded::parse(query.as_bytes())
                .find(|(key, _)| key == "lang")
                .and_then(|(_, value)| Lang::parse(&value))
        };
        let from_header = || {
            lang.and_then(|value| std::str::from_utf8(value).ok())
                .and_then(Lang::parse)
        };
        let lang = from_query().or_else(from_header).unwrap_or_default();
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
