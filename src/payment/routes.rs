//! The order endpoints: create (with `Idempotency-Key`), list, detail, a fresh checkout,
//! cancellation, and the admin's manual orders.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Duration;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::customer;
use super::error::PaymentError;
use super::grant::grant_manual_order;
use super::order::{
    self, BillingMode, NewOrder, Order, OrderStatus, OrderView, PaymentMethod, PaymentProvider,
};
use super::stripe_api::StripeApi;
use crate::api::{
    ApiError, ApiJson, ApiQuery, Authorized, ErrorBody, IdempotencyKey, Page, PageQuery,
    PageRequest, PathAndBody, SuccessBody, ok,
};
use crate::auth::users::Profile;
use crate::auth::{ActiveUser, AdminUser, users};
use crate::db::is_violation_of;
use crate::plans::{self, Plan, PlanType};
use crate::state::AppState;

type Context = web::Data<AppState>;

/// How long a pending order (and its Checkout Session) can be paid. Stripe accepts 30 minutes
/// to 24 hours.
const ORDER_TTL_MINUTES: i64 = 60;

/// A pending order older than this cannot be re-opened: `/checkout` would otherwise keep an
/// order (and its price) alive forever.
const ORDER_MAX_AGE_HOURS: i64 = 24;

#[derive(Deserialize, ToSchema)]
pub struct CreateOrder {
    pub plan_id: i64,
    /// `credit_card` (default), `alipay` or `wechat_pay`.
    pub payment_method: Option<String>,
}

fn parse_method(method: Option<&str>) -> Result<PaymentMethod, PaymentError> {
    match method.map(str::trim) {
        None => Ok(PaymentMethod::CreditCard),
        Some(method) => PaymentMethod::parse_chosen(method).ok_or(PaymentError::UnsupportedPayment),
    }
}

/// A plan that can be bought: active and not free.
async fn buyable_plan(context: &AppState, plan_id: i64) -> Result<Plan, PaymentError> {
    match plans::find(&context.pool, plan_id).await? {
        Some(plan) if plan.active && plan.plan_type != PlanType::Free => Ok(plan),
        _ => Err(PaymentError::InvalidPlan),
    }
}

/// Creates a pending order and its Stripe Checkout Session.
#[utoipa::path(post, path = "/myapi/orders", tag = "payment", request_body = CreateOrder,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "The same key from the same user returns the same order.")),
    security(("session" = [])), responses(
    (status = 200, body = inline(SuccessBody<OrderView>)),
    (status = 400, description = "40007 unknown, inactive or free plan; 40023 subscriptions are \
        card only; 40024 unknown payment method; 40029 a subscription while another is active, \
        trialing or past due (change plan instead).", body = ErrorBody),
    (status = 401, description = "40101 no valid session.", body = ErrorBody),
    (status = 500, description = "50021 the checkout session could not be created (the order \
        stays pending; retry with /checkout).", body = ErrorBody)))]
pub async fn create_order(
    context: Context,
    stripe: web::Data<StripeApi>,
    req: HttpRequest,
    Authorized(ActiveUser(session), ApiJson(body)): Authorized<ActiveUser, ApiJson<CreateOrder>>,
) -> Result<HttpResponse, ApiError> {
    let key = IdempotencyKey::of_request(&req)?;
    let user_id = session.user.id;
    if let Some(key) = &key
        && let Some(existing) =
            order::find_by_idempotency_key(&context.pool, user_id, key.as_str()).await?
    {
        return Ok(ok(existing.view(context.clock.now())));
    }
    let plan = buyable_plan(&context, body.plan_id).await?;
    let method = parse_method(body.payment_method.as_deref())?;
    if plan.plan_type == PlanType::Subscription && method != PaymentMethod::CreditCard {
        return Err(PaymentError::SubscriptionCardOnly.into());
    }
    if plan.plan_type == PlanType::Subscription
        && order::has_live_subscription(&context.pool, user_id).await?
    {
        return Err(PaymentError::SubscriptionExists.into());
    }
    if !stripe.is_configured() {
        return Err(PaymentError::PaymentsNotConfigured.into());
    }
    let now = context.clock.now();
    let order_no = order::new_order_no();
    let new_order = NewOrder {
        order_no: &order_no,
        user_id,
        plan_id: plan.id,
        billing_mode: BillingMode::of(&plan),
        payment_method: method,
        provider: PaymentProvider::Stripe,
        amount_cents: plan.amount_cents,
        currency: &plan.currency,
        credits: plan.credits,
        idempotency_key: key.as_ref().map(IdempotencyKey::as_str),
        expires_at: now + Duration::minutes(ORDER_TTL_MINUTES),
        created_at: now,
    };
    let order = match order::insert(&context.pool, new_order).await {
        Ok(order) => order,
        // A twin request with the same key won the insert: answer with its order.
        Err(error) if is_violation_of(&error, "orders_user_idempotency_key") => {
            let key = key.as_ref().map_or("", IdempotencyKey::as_str);
            let existing = order::find_by_idempotency_key(&context.pool, user_id, key).await?;
            let existing = existing.ok_or(PaymentError::OrderNotFound)?;
            return Ok(ok(existing.view(now)));
        }
        Err(error) => return Err(error.into()),
    };
    let order = open_checkout(&context, &stripe, order, &plan, &session.user).await?;
    if order.is_subscription() {
        expire_other_subscription_checkouts(&context, &stripe, &order).await?;
    }
    Ok(ok(order.view(now)))
}

/// One subscription checkout open at a time: the user's other pending subscription orders
/// expire (their sessions at Stripe first), so two cannot both be paid and billed.
async fn expire_other_subscription_checkouts(
    context: &AppState,
    stripe: &StripeApi,
    order: &Order,
) -> Result<(), PaymentError> {
    let others = order::pending_subscriptions(&context.pool, order.user_id, order.id).await?;
    for other in others {
        if let Some(session_id) = &other.checkout_session_id
            && let Err(error) = stripe.expire_session(session_id, &other.order_no).await
        {
            // Already completed or expired at Stripe: its webhook settles it.
            tracing::warn!(order_no = %other.order_no, %error,
                "a replaced subscription checkout could not be expired at Stripe");
            continue;
        }
        order::close_pending(&context.pool, other.id, OrderStatus::Expired).await?;
    }
    Ok(())
}

/// Creates the next Checkout Session of a pending order, for the user's Stripe Customer, and
/// stores it with the order's new expiry. Stripe's failure leaves the order pending for
/// `/checkout` to retry.
async fn open_checkout(
    context: &AppState,
    stripe: &StripeApi,
    order: Order,
    plan: &Plan,
    user: &Profile,
) -> Result<Order, PaymentError> {
    let customer = customer::ensure(context, stripe, user).await?;
    let now = context.clock.now();
    let attempt = order.checkout_attempts + 1;
    let expires_at = now + Duration::minutes(ORDER_TTL_MINUTES);
    let draft = Order {
        expires_at,
        ..order.clone()
    };
    if let Some(previous) = &order.checkout_session_id {
        stripe.expire_session(previous, &order.order_no).await?;
    }
    let session = stripe
        .create_session(&draft, plan, &customer, attempt)
        .await?;
    let stored = order::set_checkout(
        &context.pool,
        order.id,
        &session.id,
        &session.url,
        attempt,
        expires_at,
    )
    .await?;
    if !stored {
        return Err(PaymentError::OrderNotPending);
    }
    order::find_by_no(&context.pool, &order.order_no)
        .await?
        .ok_or(PaymentError::OrderNotFound)
}

/// The caller's order, or 40411 / 40302.
async fn own_order(
    context: &AppState,
    user_id: Uuid,
    order_no: &str,
) -> Result<Order, PaymentError> {
    let order = order::find_by_no(&context.pool, order_no)
        .await?
        .ok_or(PaymentError::OrderNotFound)?;
    if order.user_id != user_id {
        return Err(PaymentError::ForbiddenResource);
    }
    Ok(order)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrderFilter {
    pub page: Option<u32>,
    pub page_size: Option<u32>,
    /// Only orders in this status.
    pub status: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AdminOrderFilter {
    pub page: Option<u32>,
    pub page_size: Option<u32>,
    /// Only orders in this status.
    pub status: Option<String>,
    /// Only this user's orders.
    pub user_id: Option<Uuid>,
}

/// An order in the admin's list: whose it is, and the order as its user sees it.
#[derive(Serialize, ToSchema)]
pub struct AdminOrderView {
    pub user_id: Uuid,
    #[serde(flatten)]
    pub order: OrderView,
}

/// One page of orders (one user's, or everyone's), newest first.
async fn order_page(
    context: &Context,
    user_id: Option<Uuid>,
    filter: &OrderFilter,
) -> Result<(PageRequest, Vec<Order>, i64), ApiError> {
    let page = PageQuery {
        page: filter.page,
        page_size: filter.page_size,
    }
    .resolve()?;
    let status = match filter.status.as_deref().filter(|status| !status.is_empty()) {
        None => None,
        Some(status) => Some(OrderStatus::parse(status).ok_or_else(|| {
            ApiError::bad_request("query parameter `status`: not an order status.")
        })?),
    };
    let orders = order::list(&context.pool, user_id, status, page).await?;
    let total = order::count(&context.pool, user_id, status).await?;
    Ok((page, orders, total))
}

/// The caller's orders, newest first.
#[utoipa::path(get, path = "/myapi/orders", tag = "payment", params(OrderFilter),
    security(("session" = [])), responses(
    (status = 200, body = inline(SuccessBody<Page<OrderView>>)),
    (status = 401, description = "40101 no valid session.", body = ErrorBody)))]
pub async fn list_orders(
    context: Context,
    Authorized(ActiveUser(session), ApiQuery(filter)): Authorized<
        ActiveUser,
        ApiQuery<OrderFilter>,
    >,
) -> Result<HttpResponse, ApiError> {
    let (page, orders, total) = order_page(&context, Some(session.user.id), &filter).await?;
    let now = context.clock.now();
    Ok(page.answer(orders.iter().map(|order| order.view(now)).collect(), total))
}

/// Every user's orders (or one user's, with `user_id`), newest first, each with its `user_id`.
#[utoipa::path(get, path = "/myapi/admin/orders", tag = "admin", params(AdminOrderFilter),
    security(("session" = [])), responses(
    (status = 200, body = inline(SuccessBody<Page<AdminOrderView>>)),
    (status = 403, description = "Not an admin.", body = ErrorBody)))]
pub async fn admin_list_orders(
    context: Context,
    Authorized(_admin, ApiQuery(query)): Authorized<AdminUser, ApiQuery<AdminOrderFilter>>,
) -> Result<HttpResponse, ApiError> {
    let filter = OrderFilter {
        page: query.page,
        page_size: query.page_size,
        status: query.status,
    };
    let (page, orders, total) = order_page(&context, query.user_id, &filter).await?;
    let now = context.clock.now();
    let views = orders
        .iter()
        .map(|order| AdminOrderView {
            user_id: order.user_id,
            order: order.view(now),
        })
        .collect();
    Ok(page.answer(views, total))
}

/// One of the caller's orders.
#[utoipa::path(get, path = "/myapi/orders/{order_no}", tag = "payment",
    params(("order_no" = String, Path, description = "The order's number.")),
    security(("session" = [])), responses(
    (status = 200, body = inline(SuccessBody<OrderView>)),
    (status = 403, description = "40302 another user's order.", body = ErrorBody),
    (status = 404, description = "40411 no such order.", body = ErrorBody)))]
pub async fn get_order(
    context: Context,
    Authorized(ActiveUser(session), path): Authorized<ActiveUser, web::Path<String>>,
) -> Result<HttpResponse, ApiError> {
    let order = own_order(&context, session.user.id, &path).await?;
    Ok(ok(order.view(context.clock.now())))
}

/// A fresh Checkout Session for a pending order (the previous one is expired at Stripe).
#[utoipa::path(post, path = "/myapi/orders/{order_no}/checkout", tag = "payment",
    params(("order_no" = String, Path, description = "The order's number.")),
    security(("session" = [])), responses(
    (status = 200, body = inline(SuccessBody<OrderView>)),
    (status = 400, description = "40021 the order expired, is older than a day, or its plan is \
        no longer sold at the order's price (the order expires); 40022 it is not pending; 40029 \
        a subscription order while another subscription is live.", body = ErrorBody),
    (status = 403, description = "40302 another user's order.", body = ErrorBody),
    (status = 404, description = "40411 no such order.", body = ErrorBody),
    (status = 500, description = "50021 Stripe failed.", body = ErrorBody)))]
pub async fn checkout(
    context: Context,
    stripe: web::Data<StripeApi>,
    Authorized(ActiveUser(session), path): Authorized<ActiveUser, web::Path<String>>,
) -> Result<HttpResponse, ApiError> {
    let order = own_order(&context, session.user.id, &path).await?;
    let now = context.clock.now();
    match order.effective_status(now) {
        OrderStatus::Pending => {}
        OrderStatus::Expired => return Err(PaymentError::OrderExpired.into()),
        _ => return Err(PaymentError::OrderNotPending.into()),
    }
    let plan = plans::find(&context.pool, order.plan_id).await?;
    let Some(plan) = plan.filter(|plan| still_sold_as_ordered(&order, plan, now)) else {
        // The order's price is no longer on sale, or the order is too old to re-open.
        order::close_pending(&context.pool, order.id, OrderStatus::Expired).await?;
        return Err(PaymentError::OrderExpired.into());
    };
    if order.is_subscription() && order::has_live_subscription(&context.pool, order.user_id).await?
    {
        return Err(PaymentError::SubscriptionExists.into());
    }
    let order = open_checkout(&context, &stripe, order, &plan, &session.user).await?;
    if order.is_subscription() {
        expire_other_subscription_checkouts(&context, &stripe, &order).await?;
    }
    Ok(ok(order.view(now)))
}

/// Whether a pending order may be paid at the price it was made with: it is younger than
/// a day, and its plan is still on sale for the same price, currency and credits.
fn still_sold_as_ordered(order: &Order, plan: &Plan, now: chrono::DateTime<chrono::Utc>) -> bool {
    now - order.created_at < Duration::hours(ORDER_MAX_AGE_HOURS)
        && plan.active
        && plan.amount_cents == order.amount_cents
        && plan.currency.eq_ignore_ascii_case(&order.currency)
        && plan.credits == order.credits
}

#[derive(Deserialize, ToSchema)]
pub struct CancelRequest {
    /// True (default): cancel when the paid period ends; false: cancel now.
    pub at_period_end: Option<bool>,
}

/// Cancels the subscription of a paid subscription order; webhooks settle the final state.
#[utoipa::path(post, path = "/myapi/orders/{order_no}/cancel", tag = "payment",
    params(("order_no" = String, Path, description = "The order's number.")),
    request_body = CancelRequest, security(("session" = [])), responses(
    (status = 200, body = inline(SuccessBody<OrderView>)),
    (status = 400, description = "40026 not a subscription order; 40027 not a Stripe order; \
        40025 not paid; 40028 the subscription id is not synced yet.", body = ErrorBody),
    (status = 403, description = "40302 another user's order.", body = ErrorBody),
    (status = 404, description = "40411 no such order.", body = ErrorBody),
    (status = 500, description = "50022 the provider cannot cancel now; 50023 Stripe refused \
        or failed.", body = ErrorBody)))]
pub async fn cancel(
    context: Context,
    stripe: web::Data<StripeApi>,
    Authorized(ActiveUser(session), (path, ApiJson(body))): Authorized<
        ActiveUser,
        PathAndBody<String, CancelRequest>,
    >,
) -> Result<HttpResponse, ApiError> {
    let order = own_order(&context, session.user.id, &path).await?;
    if !order.is_subscription() {
        return Err(PaymentError::NotSubscriptionOrder.into());
    }
    if order.provider != PaymentProvider::Stripe {
        return Err(PaymentError::StripeOnlyCancel.into());
    }
    if order.status != OrderStatus::Paid {
        return Err(PaymentError::OrderNotPaidSubscription.into());
    }
    let subscription_id = order
        .stripe_subscription_id
        .as_deref()
        .ok_or(PaymentError::SubscriptionIdMissing)?;
    let at_period_end = body.at_period_end.unwrap_or(true);
    stripe
        .cancel_subscription(subscription_id, at_period_end)
        .await?;
    if at_period_end {
        order::set_cancel_at_period_end(&context.pool, order.id).await?;
    }
    let order = order::find_by_no(&context.pool, &order.order_no)
        .await?
        .ok_or(PaymentError::OrderNotFound)?;
    Ok(ok(order.view(context.clock.now())))
}

#[derive(Deserialize, ToSchema)]
pub struct ManualOrder {
    pub user_id: Uuid,
    pub plan_id: i64,
}

/// Records an order paid outside Stripe and grants it like a Stripe payment.
#[utoipa::path(post, path = "/myapi/admin/orders", tag = "admin", request_body = ManualOrder,
    security(("session" = [])), responses(
    (status = 200, body = inline(SuccessBody<OrderView>)),
    (status = 400, description = "40007 unknown, inactive or free plan.", body = ErrorBody),
    (status = 403, description = "Not an admin.", body = ErrorBody),
    (status = 404, description = "No such user.", body = ErrorBody)))]
pub async fn admin_create_manual_order(
    context: Context,
    Authorized(_admin, ApiJson(body)): Authorized<AdminUser, ApiJson<ManualOrder>>,
) -> Result<HttpResponse, ApiError> {
    let plan = buyable_plan(&context, body.plan_id).await?;
    if !users::exists(&context.pool, body.user_id).await? {
        return Err(ApiError::not_found());
    }
    let now = context.clock.now();
    let mut transaction = context.pool.begin().await?;
    let order = grant_manual_order(&mut transaction, body.user_id, &plan, now).await?;
    transaction.commit().await?;
    context.writes_seen.wait(&context.pool).await;
    let order_no = order.order_no;
    let order = order::find_by_no(&context.pool, &order_no)
        .await?
        .ok_or(PaymentError::OrderNotFound)?;
    Ok(ok(order.view(now)))
}
