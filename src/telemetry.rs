//! Logging: one tracing subscriber for the process, a root span per request that carries the
//! request id (so every line logged while serving a request names it; a metered call's lines
//! name it themselves), and helpers that keep personal data out of log lines.

use actix_web::HttpMessage;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use tracing::Span;
use tracing_actix_web::RootSpanBuilder;
use tracing_subscriber::EnvFilter;

use crate::api::RequestContext;
use crate::config::AppEnv;

// tracing-actix-web logs every 4xx: the service logs its own failures, once, with context.
const DEFAULT_FILTER: &str = "info,sqlx=warn,actix_server=warn,tracing_actix_web=error";

/// Installs the process-wide subscriber: JSON lines in production, readable lines elsewhere.
/// `RUST_LOG` overrides the level. A second call (tests spawn many apps) does nothing.
pub fn init(app_env: AppEnv) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let _ = match app_env {
        AppEnv::Production => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        AppEnv::Development | AppEnv::Test => builder.compact().try_init(),
    };
}

/// The root span of a request: its id and method. The raw path is left out on purpose: it can
/// carry tokens (a reset link) or personal data.
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        // A metered call gets no span: on the hottest path the span's bookkeeping (its fields
        // formatted, entered and left at every poll) was a tenth of the gateway's CPU (issue 13,
        // bench/HISTORY.md). Its log lines name their request id themselves: a failure's
        // `request failed`, a cut body's warning.
        if request.path().starts_with("/api/v1/") {
            return Span::none();
        }
        // The route pattern is left out: working it out again costs a walk of the router on
        // every call, and the metrics carry it. The values are computed only when the span is
        // enabled.
        tracing::info_span!(
            "request",
            request_id = %request
                .extensions()
                .get::<RequestContext>()
                .map(|context| context.request_id.clone())
                .unwrap_or_default(),
            method = %request.method(),
            status = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(
        span: Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        // Only the closing line comes after the status is known: a span of every gateway call
        // spends nothing on it unless that line is logged.
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return;
        }
        let status = match outcome {
            Ok(response) => response.status(),
            Err(error) => error.as_response_error().status_code(),
        };
        span.record("status", status.as_u16());
        span.in_scope(|| tracing::debug!(status = status.as_u16(), "request finished"));
    }
}

/// An email address as it may appear in a log line: the first character of the local part and
/// the domain (`j***@example.com`).
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => String::from("***"),
    }
}

#[cfg(test)]
mod tests {
    use super::mask_email;

    #[test]
    fn masked_emails_keep_only_the_first_letter_and_the_domain() {
        assert_eq!(mask_email("john.doe@example.com"), "j***@example.com");
        assert_eq!(mask_email("nonsense"), "***");
    }
}
