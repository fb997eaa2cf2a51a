//! `POST /myapi/webhooks/stripe`: the signature is checked over the raw bytes, then the event is
//! recorded under its unique id in the same transaction as its effect. A redelivered event finds
//! its id and changes nothing; an event whose effect fails is not recorded, so Stripe's retry
//! can succeed; unknown types are recorded and answered 200.

use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::ExposeSecret;

use super::error::PaymentError;
use super::event::StripeEvent;
use super::events;
use super::signature;
use crate::api::{ApiError, ErrorBody, SuccessBody, ok};
use crate::state::AppState;

/// Receives a Stripe event.
#[utoipa::path(post, path = "/myapi/webhooks/stripe", tag = "payment",
    request_body(content = Object, description = "A Stripe event, signed in `Stripe-Signature`."),
    responses(
    (status = 200, description = "Applied, or already applied, or a type that needs nothing.",
        body = inline(SuccessBody<Option<String>>)),
    (status = 400, description = "A missing, bad or stale signature, or a body that is not an \
        event. Nothing changed.", body = ErrorBody),
    (status = 500, description = "The effect failed; nothing was recorded, so Stripe retries.",
        body = ErrorBody)))]
pub async fn stripe_webhook(
    context: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let secret = context
        .settings
        .stripe_webhook_secret
        .as_ref()
        .ok_or_else(|| {
            ApiError::bad_request("Webhooks are not configured (STRIPE_WEBHOOK_SECRET is unset).")
        })?;
    let header = req
        .headers()
        .get("stripe-signature")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let now = context.clock.now().timestamp();
    signature::verify(&body, header, secret.expose_secret(), now)
        .map_err(|error| ApiError::bad_request(format!("{error}.")))?;
    let event: StripeEvent = serde_json::from_slice(&body).map_err(|error| {
        ApiError::bad_request(format!("The body is not a Stripe event: {error}."))
    })?;
    process(&context, &event).await?;
    Ok(ok(()))
}

/// Applies `event` once; answers once this instance's gateway sees what it changed.
pub async fn process(context: &AppState, event: &StripeEvent) -> Result<(), PaymentError> {
    let mut transaction = context.pool.begin().await?;
    // A twin delivery waits here on the unique id until this transaction ends, then finds it.
    let first = sqlx::query_scalar!(
        r#"INSERT INTO stripe_events (id, event_type, created) VALUES ($1, $2, $3)
           ON CONFLICT (id) DO NOTHING RETURNING id"#,
        event.id,
        event.event_type,
        event.created_at()
    )
    .fetch_optional(&mut *transaction)
    .await?;
    if first.is_none() {
        tracing::debug!(event_id = %event.id, "Stripe event already applied");
        return Ok(());
    }
    let effects = events::Effects {
        now: context.clock.now(),
        grace_days: context.settings.billing_grace.num_days(),
    };
    events::apply(&mut transaction, event, &effects).await?;
    transaction.commit().await?;
    context.writes_seen.wait(&context.pool).await;
    tracing::info!(event_id = %event.id, event_type = %event.event_type, "Stripe event applied");
    Ok(())
}
