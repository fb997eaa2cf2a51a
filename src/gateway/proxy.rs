//! `ANY /api/v1/{provider}/{path...}`: the metered call. Checks, in the contract's order: the
//! key (40102, 40103), the account (40301), the provider (404), the per-second, per-hour and
//! monthly limits (42901-42903), the key's spend cap (40305), the credits (40201) and the
//! global protection (50301); then forwards method, path tail, query and body to the provider
//! with its credentials and streams the answer back. Only an answer below 500 is charged and counted.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::body::{BodyStream, SizedStream};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::GatewayState;
use super::body::{self, ForwardedBody, StartedBody};
use super::call::Call;
use super::directory::Account;
use super::error::GatewayError;
use super::keys::{authenticate, key_in};
use super::limits::{month_of, secs_until_next_month};
use super::providers::Provider;
use super::upstream::{self, X_API_KEY, X_FORWARDED_FOR};
use super::wallet::Shortfall;
use crate::api::{ApiError, ErrorBody, Rendered, client_ip_of, headers};
use crate::limits::Exceeded;
use crate::state::AppState;

// Built at compile time: `from_static` at run time checks the name again on every call.
const RATE_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const RATE_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const CREDITS_REMAINING: HeaderName = HeaderName::from_static("x-credits-remaining");

/// The headers every gateway answer carries.
struct Meters<'a> {
    account: &'a Account,
    rps_limit: u32,
    rps_remaining: u32,
    /// Known when the call was charged (read under the charge's lock); read when answered
    /// otherwise, so that a refusal shows the credits as they are once its hold is gone.
    credits: Option<i64>,
}

impl Meters<'_> {
    fn credits(&self) -> i64 {
        self.credits
            .unwrap_or_else(|| visible_credits(self.account))
    }

    fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(RATE_LIMIT, HeaderValue::from(self.rps_limit));
        headers.insert(RATE_REMAINING, HeaderValue::from(self.rps_remaining));
        headers.insert(CREDITS_REMAINING, HeaderValue::from(self.credits()));
    }

    fn on_error(&self, error: GatewayError) -> ApiError {
        ApiError::from(error)
            .with_header("x-ratelimit-limit", self.rps_limit.to_string())
            .with_header("x-ratelimit-remaining", self.rps_remaining.to_string())
            .with_header("x-credits-remaining", self.credits().to_string())
    }
}

/// A metered call to a provider: forwarded with the provider's credentials, answered with the
/// upstream's status, headers and body, and charged the provider's `cost` when the upstream
/// answered below 500.
#[utoipa::path(method(get, post, put, delete), path = "/api/v1/{provider}/{path}", tag = "gateway",
    params(("provider" = String, Path, description = "The provider's slug."),
        ("path" = String, Path, description = "The path below the provider's base URL.")),
    security(("api_key" = [])), responses(
    (status = 200, description = "The upstream's answer (any status below 500), with \
        X-RateLimit-Limit, X-RateLimit-Remaining and X-Credits-Remaining."),
    (status = 400, description = "The path leaves the provider's base path.", body = ErrorBody),
    (status = 401, description = "40102 no API key; 40103 an unknown, revoked or expired key \
        (or a rotated key's previous secret past its grace).", body = ErrorBody),
    (status = 402, description = "40201 fewer credits than the provider's cost.", body = ErrorBody),
    (status = 403, description = "40301 the account is frozen; 40303 the key may not be used \
        from the client's address; 40304 the key may not call this provider; 40305 the key's \
        spend cap cannot cover the provider's cost.", body = ErrorBody),
    (status = 404, description = "No such provider.", body = ErrorBody),
    (status = 429, description = "42901 per-second (the plan's, or the key's own `rps_limit`), \
        42902 per-hour limit, 42903 monthly quota.",
        body = ErrorBody),
    (status = 502, description = "50201 the upstream was unreachable, timed out or answered 5xx \
        (not charged).", body = ErrorBody),
    (status = 503, description = "50301 global protection limit (with Retry-After).", body = ErrorBody)))]
pub async fn forward(
    context: web::Data<AppState>,
    gateway: web::Data<GatewayState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let call = Call::from_actix(&req, payload)?;
    let answer = meter(&context, &gateway, call).await?;
    Ok(into_actix(answer))
}

/// The metered call itself, in hyper's types: the HTTP server calls it directly, and
/// `forward` for a call that came through actix.
pub async fn meter(
    context: &AppState,
    gateway: &Arc<GatewayState>,
    call: Call,
) -> Result<http::Response<ForwardedBody>, ApiError> {
    let started = tokio::time::Instant::now();
    let headers = &call.head.headers;
    let key = key_in(
        headers.get(&X_API_KEY).map(HeaderValue::as_bytes),
        headers
            .get(http::header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
    )
    .ok_or(GatewayError::KeyMissing)?;
    let client = call.peer.and_then(|peer| {
        let forwarded = headers.get_all(&X_FORWARDED_FOR).into_iter();
        client_ip_of(
            peer.ip(),
            forwarded.map(HeaderValue::as_bytes),
            &context.settings.trusted_proxies,
        )
    });
    // Looked up first, answered in the contract's order: a cold account's load reserves a
    // first lease for what this call costs.
    let uri = call.head.uri.clone();
    let path = split_path(uri.path());
    let provider = path
        .and_then(|(slug, _)| gateway.providers.get(slug))
        .filter(|provider| provider.enabled);
    let first_cost = provider.as_ref().map_or(0, |provider| provider.cost);
    let known = authenticate(context, gateway, client, &key, first_cost).await?;
    let (key_entry, account) = (&known.key, &known.account);
    let controls = &key_entry.controls;
    let now = context.clock.now();
    if controls.expired(now.timestamp()) {
        return Err(GatewayError::KeyExpired.into());
    }
    if controls.allowed_ips.is_some() && !client.is_some_and(|ip| controls.allows_ip(ip)) {
        return Err(GatewayError::KeyAddressRefused.into());
    }
    let limits = account.limits();
    let mut meters = Meters {
        account,
        rps_limit: limits.rps,
        rps_remaining: 0,
        credits: None,
    };
    if account.frozen.load(Ordering::Relaxed) {
        return Err(meters.on_error(GatewayError::AccountFrozen));
    }
    let (Some((_, tail)), Some(provider)) = (path, provider) else {
        return Err(meters.on_error(GatewayError::UnknownProvider));
    };
    if !tail_stays_inside(tail) {
        return Err(meters.on_error(GatewayError::BadPath));
    }
    if !controls.allows_provider(&provider.slug) {
        return Err(meters.on_error(GatewayError::KeyProviderRefused));
    }
    // The key's own per-second rate, below the plan's: counted apart, by the key.
    if let Some(rps) = controls.rps {
        let key_id = key_entry.key_id.to_string();
        let decision = context
            .limiter
            .check("key_rps", &key_id, crate::limits::Rate::per_second(rps))
            .await;
        if !decision.allowed {
            let refusal = GatewayError::PerSecond {
                retry_after_secs: decision.retry_after_secs(),
            };
            return Err(meters.on_error(refusal));
        }
    }

    // Every condition is evaluated before anything is consumed, so a refused call takes
    // nothing from any limit or from the credits.
    let cost = provider.cost;
    let cap = controls.spend_cap.map(|cap| (key_entry.key_id, cap));
    let held = gateway.meter.hold(account, cost, cap).await?;
    let permit = gateway.in_flight.enter();
    let rates = limits.rates();
    let bundle = account.limit_bundle(limits, &rates, month_of(now));
    let verdict = context
        .limiter
        .check_bundle(&bundle, held.is_ok() && permit.is_some())
        .await;
    meters.rps_remaining = verdict.remaining;
    let refusal = match verdict.exceeded {
        Some(Exceeded::Rate {
            index: 0,
            retry_after,
        }) => Some(GatewayError::PerSecond {
            retry_after_secs: secs(retry_after),
        }),
        Some(Exceeded::Rate { retry_after, .. }) => Some(GatewayError::PerHour {
            retry_after_secs: secs(retry_after),
        }),
        Some(Exceeded::Quota) => Some(GatewayError::MonthlyQuota {
            retry_after_secs: secs_until_next_month(now),
        }),
        None => match &held {
            Err(Shortfall::Credits) => Some(GatewayError::InsufficientCredits),
            Err(Shortfall::SpendCap) => Some(GatewayError::SpendCapReached),
            Ok(_) if permit.is_none() => Some(GatewayError::Overloaded),
            Ok(_) => None,
        },
    };
    if let Some(refusal) = refusal {
        drop(held);
        return Err(meters.on_error(refusal));
    }
    if let Some(rate) = gateway.global_rate {
        let decision = context.limiter.check("gateway_global", "all", rate).await;
        if !decision.allowed {
            drop(held);
            context.limiter.refund_bundle(&bundle).await;
            return Err(meters.on_error(GatewayError::Overloaded));
        }
    }
    // Written only when the second changes: a line every call writes is one that the other
    // workers' calls with the key must fetch again.
    if key_entry.last_used.load(Ordering::Relaxed) != now.timestamp() {
        key_entry
            .last_used
            .store(now.timestamp(), Ordering::Relaxed);
    }
    if let Some(ip) = client {
        key_entry.note_client(ip);
    }
    if held.as_ref().is_ok_and(|held| held.wants_top_up()) {
        let gateway = gateway.clone();
        let account = account.clone();
        actix_web::rt::spawn(async move { gateway.meter.prefetch(&account, cost).await });
    }

    let outcome = if gateway.breakers.admit(&provider.slug) {
        let outcome = call_provider(call, &provider, tail, started).await;
        gateway.breakers.record(&provider.slug, outcome.is_ok());
        outcome
    } else {
        Err(format!("{}: its circuit breaker is open", provider.slug))
    };
    match outcome {
        Ok(body) => {
            if let Ok(held) = held {
                meters.credits = Some(held.charge(key_entry.key_id, &provider.slug, now));
            }
            drop(permit);
            Ok(respond(body, &meters))
        }
        Err(reason) => {
            // Not charged, and not counted towards the month's quota; the rate slots stay
            // spent, so a failing provider is not driven harder than the limits allow.
            drop(held);
            context.limiter.refund_quota(&bundle).await;
            gateway
                .meter
                .count_error(account, key_entry.key_id, &provider.slug, now);
            Err(meters.on_error(GatewayError::Upstream(reason)))
        }
    }
}

/// Forwards the call and waits for the head and the first chunk of the body: an answer below
/// 500 whose body started within the provider's limits, or why not.
async fn call_provider(
    call: Call,
    provider: &Provider,
    tail: &str,
    started: tokio::time::Instant,
) -> Result<StartedBody, String> {
    let (head, body) = upstream::send(call, &provider.target, tail, started)
        .await
        .map_err(|error| format!("{}: {error}", provider.slug))?;
    if head.status.as_u16() >= 500 {
        return Err(format!("{} answered {}", provider.slug, head.status));
    }
    body::start(head, body, provider.body, started, &provider.slug).await
}

fn secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

fn visible_credits(account: &Account) -> i64 {
    account
        .wallet
        .lock()
        .map(|wallet| wallet.visible_credits())
        .unwrap_or(0)
}

/// `/api/v1/{slug}/{tail}` of the raw (still percent-encoded) path.
fn split_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/api/v1/")?;
    Some(rest.split_once('/').unwrap_or((rest, "")))
}

/// No segment of the tail, once decoded, may climb out of the provider's base path or smuggle
/// a separator.
fn tail_stays_inside(tail: &str) -> bool {
    // Nothing encoded (nearly every call's tail): the segments are what they say, so no
    // decoding is needed to judge them.
    if !tail.contains('%') {
        return !tail.contains(['\\', '\0'])
            && tail
                .split('/')
                .all(|segment| segment != "." && segment != "..");
    }
    tail.split('/').all(|segment| {
        let decoded: std::borrow::Cow<[u8]> =
            percent_encoding::percent_decode(segment.as_bytes()).into();
        *decoded != *b"."
            && *decoded != *b".."
            && !decoded.contains(&b'/')
            && !decoded.contains(&b'\\')
            && !decoded.contains(&0)
    })
}

/// The provider's answer as the client gets it: its status, its headers (read without the
/// hop-by-hop ones and the length, which the body declares), the meters and the body under its
/// limits.
fn respond(started: StartedBody, meters: &Meters) -> http::Response<ForwardedBody> {
    let (mut head, body) = started.into_parts();
    meters.apply(&mut head.headers);
    http::Response::from_parts(head, body)
}

/// A metered call's answer as actix sends it (a call that came through actix).
fn into_actix(answer: http::Response<ForwardedBody>) -> HttpResponse {
    let (head, body) = answer.into_parts();
    let status = StatusCode::from_u16(head.status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = HttpResponse::build(status);
    let (body, length) = body.into_parts();
    let mut response = match length {
        Some(length) => response.body(SizedStream::new(length, body)),
        None => response.body(BodyStream::new(body)),
    };
    headers::into_actix(&head.headers, response.headers_mut());
    // The upstream's own 4xx body is the answer, not something to wrap in our envelope. Only
    // an error is ever wrapped: a success needs no mark (and its map costs an allocation).
    if status.is_client_error() || status.is_server_error() {
        response.extensions_mut().insert(Rendered);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_cannot_climb_out_of_the_base_path() {
        for inside in ["", "items", "a/b/c", "a%20b", "..a", "a..", "v1/items?x=1"] {
            assert!(tail_stays_inside(inside), "{inside}");
        }
        for outside in [
            "..", "a/../b", "%2e%2e/x", "%2E%2e", "a%2fb", "a%5cb", ".", "a/./b", "%00", "a\\b",
            "a\0b", "x/..",
        ] {
            assert!(!tail_stays_inside(outside), "{outside}");
        }
    }

    #[test]
    fn the_slug_and_the_tail_come_from_the_raw_path() {
        assert_eq!(
            split_path("/api/v1/weather/v2/today"),
            Some(("weather", "v2/today"))
        );
        assert_eq!(split_path("/api/v1/weather"), Some(("weather", "")));
        assert_eq!(split_path("/elsewhere"), None);
    }
}
