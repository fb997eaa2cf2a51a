//! The customer's billing pages: invoices and receipts, and Stripe's Billing Portal.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::customer;
use super::error::PaymentError;
use super::invoice::{self, InvoiceView};
use super::stripe_api::StripeApi;
use crate::api::{ApiError, ApiQuery, Authorized, ErrorBody, Page, PageQuery, SuccessBody, ok};
use crate::auth::{ActiveUser, AdminUser};
use crate::state::AppState;

type Context = web::Data<AppState>;

/// The caller's paid invoices and one-time payments, newest first.
#[utoipa::path(get, path = "/myapi/invoices", tag = "payment", params(PageQuery),
    security(("session" = [])), responses(
    (status = 200, body = inline(SuccessBody<Page<InvoiceView>>)),
    (status = 401, description = "40101 no valid session.", body = ErrorBody)))]
pub async fn list_invoices(
    context: Context,
    Authorized(ActiveUser(session), ApiQuery(query)): Authorized<ActiveUser, ApiQuery<PageQuery>>,
) -> Result<HttpResponse, ApiError> {
    let page = query.resolve()?;
    let user_id = Some(session.user.id);
    let items = invoice::list(&context.pool, user_id, page).await?;
    let total = invoice::count(&context.pool, user_id).await?;
    Ok(page.answer(items, total))
}

/// Every user's invoices and one-time payments, newest first, each with its `user_id`.
#[utoipa::path(get, path = "/myapi/admin/invoices", tag = "admin", params(PageQuery),
    security(("session" = [])), responses(
    (status = 200, body = inline(SuccessBody<Page<InvoiceView>>)),
    (status = 403, description = "Not an admin.", body = ErrorBody)))]
pub async fn admin_list_invoices(
    context: Context,
    Authorized(_admin, ApiQuery(query)): Authorized<AdminUser, ApiQuery<PageQuery>>,
) -> Result<HttpResponse, ApiError> {
    let page = query.resolve()?;
    let items = invoice::list(&context.pool, None, page).await?;
    let total = invoice::count(&context.pool, None).await?;
    Ok(page.answer(items, total))
}

#[derive(Serialize, ToSchema)]
pub struct PortalSession {
    /// Stripe's Billing Portal for this customer; it returns to `{PUBLIC_URL}/billing`.
    pub url: String,
}

/// A Stripe Billing Portal session: the customer updates the card, sees invoices, cancels.
#[utoipa::path(post, path = "/myapi/billing/portal", tag = "payment",
    security(("session" = [])), responses(
    (status = 200, body = inline(SuccessBody<PortalSession>)),
    (status = 401, description = "40101 no valid session.", body = ErrorBody),
    (status = 500, description = "50021 Stripe is not configured, refused or failed.",
        body = ErrorBody)))]
pub async fn billing_portal(
    context: Context,
    stripe: web::Data<StripeApi>,
    ActiveUser(session): ActiveUser,
) -> Result<HttpResponse, ApiError> {
    if !stripe.is_configured() {
        return Err(PaymentError::PaymentsNotConfigured.into());
    }
    let customer_id = customer::ensure(&context, &stripe, &session.user).await?;
    let url = stripe.portal_session(&customer_id).await?;
    Ok(ok(PortalSession { url }))
}
