//! The customer's billing pages: invoices and receipts, Stripe's Billing Portal, and plan
//! changes of a subscription.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::customer;
use super::error::PaymentError;
use super::invoice::{self, InvoiceView};
use super::order::{self, OrderView, PaymentProvider, PlanChange};
use super::stripe_api::StripeApi;
use crate::api::{
    ApiError, ApiJson, ApiQuery, Authorized, ErrorBody, Page, PageQuery, SuccessBody, ok,
};
use crate::auth::{ActiveUser, AdminUser};
use crate::plans::{self, Plan, PlanType};
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

#[derive(Deserialize, ToSchema)]
pub struct PlanChangeRequest {
    /// The subscription plan to move to.
    pub plan_id: i64,
}

/// A plan's price per month, to tell an upgrade from a downgrade across intervals.
fn monthly_cents(plan: &Plan) -> i64 {
    if plan.interval.as_deref() == Some("year") {
        plan.amount_cents / 12
    } else {
        plan.amount_cents
    }
}

/// Changes the plan of the caller's subscription: an upgrade is invoiced at once with Stripe's
/// proration, a downgrade takes effect at the next renewal. The limits and credits follow
/// Stripe's webhooks, never this request: the order answered names the plan asked for as the
/// subscription's `pending_plan_id` until then.
#[utoipa::path(post, path = "/myapi/subscription/change", tag = "payment",
    request_body = PlanChangeRequest, security(("session" = [])), responses(
    (status = 200, body = inline(SuccessBody<OrderView>)),
    (status = 400, description = "40007 not an active subscription plan, the current plan, or \
        another currency; 40027 a manual subscription; 40028 the subscription id is not synced \
        yet; 40031 no live subscription.", body = ErrorBody),
    (status = 401, description = "40101 no valid session.", body = ErrorBody),
    (status = 500, description = "50021 Stripe refused or failed.", body = ErrorBody)))]
pub async fn change_plan(
    context: Context,
    stripe: web::Data<StripeApi>,
    Authorized(ActiveUser(session), ApiJson(body)): Authorized<
        ActiveUser,
        ApiJson<PlanChangeRequest>,
    >,
) -> Result<HttpResponse, ApiError> {
    let target = plans::find(&context.pool, body.plan_id)
        .await?
        .filter(|plan| plan.active && plan.plan_type == PlanType::Subscription)
        .ok_or(PaymentError::InvalidPlan)?;
    // The order's row stays locked through the Stripe call: one change at a time.
    let mut transaction = context.pool.begin().await?;
    let order = order::lock_live_subscription(&mut transaction, session.user.id)
        .await?
        .ok_or(PaymentError::NoSubscription)?;
    if order.provider != PaymentProvider::Stripe {
        return Err(PaymentError::StripeOnlyCancel.into());
    }
    let subscription_id = order
        .stripe_subscription_id
        .clone()
        .ok_or(PaymentError::SubscriptionIdMissing)?;
    if target.id == order.plan_id || !target.currency.eq_ignore_ascii_case(&order.currency) {
        return Err(
            ApiError::new(crate::api::Code::INVALID_PLAN_TYPE).with_detail(
                "field `plan_id`: another subscription plan in the subscription's currency.",
            ),
        );
    }
    let current = plans::find(&mut *transaction, order.plan_id).await?;
    let upgrade = current.is_none_or(|current| monthly_cents(&target) > monthly_cents(&current));
    stripe
        .change_plan(&subscription_id, &order, &target, upgrade)
        .await?;
    let change = if upgrade {
        PlanChange::Upgrade
    } else {
        PlanChange::Downgrade
    };
    order::set_pending_change(&mut transaction, order.id, target.id, change).await?;
    transaction.commit().await?;
    let order = order::find_by_no(&context.pool, &order.order_no)
        .await?
        .ok_or(PaymentError::OrderNotFound)?;
    Ok(ok(order.view(context.clock.now())))
}
