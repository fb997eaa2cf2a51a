//! An account's data as a whole: its export (everything the service holds about the user) and
//! its deletion (personal data erased, orders and the ledger kept under an anonymous tombstone),
//! by the user or by an admin. Here because it reads and erases across every module.

use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::api::{ApiError, ApiJson, Authorized, ErrorBody, SuccessBody, ok};
use crate::auth::reauth::confirm_password;
use crate::auth::two_factor;
use crate::auth::{ActiveUser, AdminUser, AuthError, Passwords, users};
use crate::gateway::{GatewayState, keys};
use crate::mail::outbox;
use crate::payment::{self, StripeApi};
use crate::state::AppState;

/// Everything about `user_id`, section by section, as JSON.
async fn export(context: &AppState, user_id: Uuid) -> Result<Value, sqlx::Error> {
    let document = sqlx::query_scalar!(
        r#"SELECT json_build_object(
             'profile', (SELECT row_to_json(u) FROM (
                 SELECT id, email, role, status, lang, low_balance_alert, created_at
                 FROM users WHERE id = $1) u),
             'sessions', (SELECT COALESCE(json_agg(s ORDER BY s.created_at), '[]') FROM (
                 SELECT id, created_at, expires_at, revoked_at, last_seen_at, ip, user_agent
                 FROM sessions WHERE user_id = $1) s),
             'api_keys', (SELECT COALESCE(json_agg(k ORDER BY k.created_at), '[]') FROM (
                 SELECT id, name, prefix, created_at, last_used_at, last_ip, revoked_at,
                        expires_at, rps_limit, providers, allowed_ips, spend_cap_credits,
                        spend_cap_period
                 FROM api_keys WHERE user_id = $1) k),
             'orders', (SELECT COALESCE(json_agg(o ORDER BY o.created_at), '[]') FROM (
                 SELECT order_no, plan_id, status, billing_mode, payment_method, amount_cents,
                        amount_paid_cents, discount_cents, currency, credits,
                        subscription_status, current_period_end, paid_at, created_at
                 FROM orders WHERE user_id = $1) o),
             'invoices', (SELECT COALESCE(json_agg(i ORDER BY i.created_at), '[]') FROM (
                 SELECT id, number, status, amount_paid_cents, currency, period_start,
                        period_end, hosted_invoice_url, pdf_url, created_at
                 FROM invoices WHERE user_id = $1) i),
             'ledger', (SELECT COALESCE(json_agg(l ORDER BY l.id), '[]') FROM (
                 SELECT id, amount, balance_after, reason, reference, created_at
                 FROM ledger_entries WHERE user_id = $1) l),
             'usage', (SELECT COALESCE(json_agg(h ORDER BY h.hour), '[]') FROM (
                 SELECT hour, key_id, provider, calls, credits, errors
                 FROM usage_hourly WHERE user_id = $1) h)
           ) AS "document!""#,
        user_id
    )
    .fetch_one(&context.pool)
    .await?;
    Ok(document)
}

/// Everything the service holds about the caller: profile, sessions, keys (without secrets),
/// orders, invoices, ledger and usage.
#[utoipa::path(get, path = "/myapi/user/export", tag = "auth", security(("session" = [])),
    responses((status = 200, body = inline(SuccessBody<Object>)),
    (status = 401, description = "40101 no valid session.", body = ErrorBody)))]
pub async fn export_own(
    context: web::Data<AppState>,
    ActiveUser(session): ActiveUser,
) -> Result<HttpResponse, ApiError> {
    Ok(ok(export(&context, session.user.id).await?))
}

/// Everything the service holds about a user.
#[utoipa::path(get, path = "/myapi/admin/users/{id}/export", tag = "admin",
    params(("id" = Uuid, Path, description = "The user's id.")),
    security(("session" = [])), responses((status = 200, body = inline(SuccessBody<Object>)),
    (status = 403, description = "Not an admin.", body = ErrorBody),
    (status = 404, description = "No such user.", body = ErrorBody)))]
pub async fn export_user(
    context: web::Data<AppState>,
    Authorized(_admin, path): Authorized<AdminUser, web::Path<Uuid>>,
) -> Result<HttpResponse, ApiError> {
    let user_id = path.into_inner();
    if !users::exists(&context.pool, user_id).await? {
        return Err(ApiError::not_found());
    }
    Ok(ok(export(&context, user_id).await?))
}

/// Deletes an account: its live Stripe subscription is cancelled first (a Stripe failure stops
/// here, 50023), then in one transaction its keys and sessions end and its personal data is
/// erased; orders, invoices and the ledger stay under the anonymous tombstone.
async fn delete(
    context: &AppState,
    stripe: &StripeApi,
    gateway: &GatewayState,
    user_id: Uuid,
) -> Result<(), ApiError> {
    payment::cancel_live_subscription(context, stripe, user_id).await?;
    let now = context.clock.now();
    let mut transaction = context.pool.begin().await?;
    let Some(old_email) = users::erase(&mut transaction, user_id, now).await? else {
        return Err(ApiError::not_found());
    };
    keys::revoke_all(&mut transaction, user_id, now).await?;
    payment::forget_customer(&mut transaction, user_id).await?;
    outbox::discard_for(&mut transaction, &old_email).await?;
    transaction.commit().await?;
    gateway.directory.set_frozen(user_id, true);
    tracing::info!(%user_id, "account deleted");
    Ok(())
}

#[derive(Deserialize, ToSchema)]
pub struct DeleteRequest {
    #[schema(value_type = String)]
    pub password: SecretString,
    /// A two-factor code (or recovery code), when two-factor sign-in is enabled.
    pub code: Option<String>,
}

/// Deletes the caller's account, with its password.
#[utoipa::path(delete, path = "/myapi/user", tag = "auth", request_body = DeleteRequest,
    security(("session" = [])), responses(
    (status = 200, body = inline(SuccessBody<Option<String>>)),
    (status = 400, description = "40009 a wrong or missing two-factor code (enrolled accounts).",
        body = ErrorBody),
    (status = 401, description = "40101 no valid session; 40111 a wrong password.",
        body = ErrorBody),
    (status = 429, description = "Too many wrong passwords (with Retry-After).", body = ErrorBody),
    (status = 500, description = "50023 Stripe could not cancel the subscription; nothing was \
        deleted.", body = ErrorBody)))]
pub async fn delete_own(
    context: web::Data<AppState>,
    passwords: web::Data<Passwords>,
    stripe: web::Data<StripeApi>,
    gateway: web::Data<GatewayState>,
    req: HttpRequest,
    Authorized(ActiveUser(session), ApiJson(body)): Authorized<ActiveUser, ApiJson<DeleteRequest>>,
) -> Result<HttpResponse, ApiError> {
    confirm_password(&context, &passwords, &req, &session, &body.password).await?;
    let mut connection = context.pool.acquire().await?;
    if two_factor::enabled(&mut connection, session.user.id).await? {
        let now = u64::try_from(context.clock.now().timestamp()).unwrap_or(0);
        let code = body.code.as_deref().unwrap_or_default();
        if !two_factor::check_code(&mut connection, session.user.id, code, now).await? {
            return Err(AuthError::SecondFactorInvalid.into());
        }
    }
    drop(connection);
    delete(&context, &stripe, &gateway, session.user.id).await?;
    Ok(ok(()))
}

/// Deletes a user's account (an admin's own cannot be deleted here).
#[utoipa::path(delete, path = "/myapi/admin/users/{id}", tag = "admin",
    params(("id" = Uuid, Path, description = "The user's id.")),
    security(("session" = [])), responses(
    (status = 200, body = inline(SuccessBody<Option<String>>)),
    (status = 400, description = "The admin's own account.", body = ErrorBody),
    (status = 403, description = "Not an admin.", body = ErrorBody),
    (status = 404, description = "No such user, or deleted before.", body = ErrorBody),
    (status = 500, description = "50023 Stripe could not cancel the subscription.",
        body = ErrorBody)))]
pub async fn delete_user(
    context: web::Data<AppState>,
    stripe: web::Data<StripeApi>,
    gateway: web::Data<GatewayState>,
    Authorized(AdminUser(admin), path): Authorized<AdminUser, web::Path<Uuid>>,
) -> Result<HttpResponse, ApiError> {
    let user_id = path.into_inner();
    if user_id == admin.id {
        return Err(ApiError::bad_request(
            "An admin cannot delete their own account here.",
        ));
    }
    delete(&context, &stripe, &gateway, user_id).await?;
    Ok(ok(()))
}
