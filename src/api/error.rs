//! `ApiError`: what every handler returns on failure. Module error enums convert into it; its
//! `ResponseError` impl is the only place an error response is made.

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::{HttpResponse, ResponseError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::catalogue::{Code, Lang};
use super::request::{REQUEST_ID_HEADER, RequestContext, request_context};

/// An error answer. `sub_code` is present when a module code describes the error.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    #[schema(example = 402)]
    pub code: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = 40201)]
    pub sub_code: Option<u32>,
    #[schema(example = "Insufficient balance or call quota.")]
    pub msg: String,
    /// Always null on errors.
    #[schema(value_type = Option<Object>)]
    pub data: Option<()>,
    pub request_id: String,
}

impl ErrorBody {
    /// The one place an error body is made. `detail` names what was wrong (a field, a limit)
    /// and follows the catalogue's message.
    pub fn render(code: Code, detail: Option<&str>, lang: Lang, request_id: &str) -> ErrorBody {
        let info = code.info();
        let base = info.message(lang);
        let msg = match detail {
            Some(detail) => format!("{base} {detail}"),
            None => base.to_owned(),
        };
        ErrorBody {
            code: info.code,
            sub_code: info.sub_code,
            msg,
            data: None,
            request_id: request_id.to_owned(),
        }
    }
}

/// An error answer: a catalogue code, an optional public detail (which field, which limit), an
/// optional `Retry-After`, and the internal cause that is logged but never shown.
pub struct ApiError {
    code: Code,
    detail: Option<String>,
    retry_after: Option<u64>,
    cause: Option<anyhow::Error>,
    /// Set when the error is rendered outside the request's task (a panic's answer is made by
    /// the server after the request context middleware has returned).
    context: Option<RequestContext>,
    /// Extra headers of the answer (the gateway's rate and credit meters).
    headers: Vec<(&'static str, String)>,
}

/// Marks a response whose body is final: made by the envelope renderer, or an upstream's answer
/// relayed by the gateway. The context middleware leaves such a response alone.
#[derive(Clone, Copy)]
pub struct Rendered;

impl ApiError {
    pub fn new(code: Code) -> Self {
        ApiError {
            code,
            detail: None,
            retry_after: None,
            cause: None,
            context: None,
            headers: Vec::new(),
        }
    }

    /// 400 whose message says what is wrong with the input.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        ApiError::new(Code::BAD_REQUEST).with_detail(detail)
    }

    pub fn not_found() -> Self {
        ApiError::new(Code::NOT_FOUND)
    }

    /// 500: the cause goes to the log with the request id, never to the client.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        ApiError::new(Code::INTERNAL).with_cause(cause)
    }

    /// 503 with `Retry-After`: a dependency is down or the service protects itself.
    pub fn unavailable(retry_after_secs: u64) -> Self {
        ApiError::new(Code::SERVICE_BUSY).with_retry_after(retry_after_secs)
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    pub fn with_cause(mut self, cause: impl Into<anyhow::Error>) -> Self {
        self.cause = Some(cause.into());
        self
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    pub(crate) fn in_context(mut self, context: RequestContext) -> Self {
        self.context = Some(context);
        self
    }

    pub fn code(&self) -> Code {
        self.code
    }
}

impl fmt::Debug for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiError")
            .field("code", &self.code.number())
            .field("detail", &self.detail)
            .field("cause", &self.cause)
            .finish()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code.number(), self.code.info().name)?;
        if let Some(cause) = &self.cause {
            write!(f, ": {cause:#}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let context = self.context.clone().unwrap_or_else(request_context);
        let status = self.status_code();
        if status.is_server_error() {
            tracing::error!(request_id = %context.request_id, error = %self, "request failed");
        }
        let body = ErrorBody::render(
            self.code,
            self.detail.as_deref(),
            context.lang,
            &context.request_id,
        );
        let mut response = HttpResponse::build(status);
        if let Ok(request_id) = HeaderValue::from_str(&context.request_id) {
            response.insert_header((REQUEST_ID_HEADER, request_id));
        }
        for (name, value) in &self.headers {
            if let Ok(value) = HeaderValue::from_str(value) {
                response.insert_header((*name, value));
            }
        }
        if let Some(secs) = self.retry_after {
            response.insert_header((RETRY_AFTER, HeaderValue::from(secs)));
        }
        let mut response = response.json(body);
        response.extensions_mut().insert(Rendered);
        response
    }
}

impl From<sqlx::Error> for ApiError {
    /// A database that cannot be reached or that went away is an outage, whatever the way it
    /// shows: 503 with `Retry-After`, so clients back off instead of hanging or seeing a 500.
    fn from(error: sqlx::Error) -> Self {
        if is_outage(&error) {
            ApiError::unavailable(2).with_cause(error)
        } else {
            ApiError::internal(error)
        }
    }
}

/// Whether `error` says the database is unavailable rather than that a statement is wrong: no
/// connection in time, a pool closed, a socket refused or reset, a connection cut mid-query
/// (the protocol stream ends), or the server saying so itself: SQLSTATE class 08 (connection
/// exception), 57P01-57P03 (shut down by an administrator, crashed, not yet accepting
/// connections) and 53300 (too many connections).
pub fn is_outage(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(database) => database.code().is_some_and(|code| {
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}
