//! Orders: the row, the view clients see, and the queries.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::api::PageRequest;

/// A row of `orders`.
#[derive(Clone, Debug)]
pub struct Order {
    pub id: i64,
    pub order_no: String,
    pub user_id: Uuid,
    pub plan_id: i64,
    pub status: String,
    pub billing_mode: String,
    pub payment_method: String,
    pub provider: String,
    pub amount_cents: i64,
    pub currency: String,
    pub credits: i64,
    pub checkout_session_id: Option<String>,
    pub checkout_url: Option<String>,
    pub checkout_attempts: i32,
    pub stripe_customer_id: Option<String>,
    pub stripe_subscription_id: Option<String>,
    pub subscription_status: Option<String>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub subscription_state_at: Option<DateTime<Utc>>,
    pub refunded_credits: i64,
    pub expires_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// The subscription part of the status and of an order.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SubscriptionView {
    pub order_no: String,
    pub status: String,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
}

/// An order as clients see it.
#[derive(Serialize, ToSchema)]
pub struct OrderView {
    pub order_no: String,
    /// `pending`, `paid`, `expired`, `failed`, `cancelled` or `refunded`.
    pub status: String,
    pub plan_id: i64,
    /// `one_time` or `subscription`.
    pub billing_mode: String,
    pub payment_method: String,
    /// `stripe`, or `manual` for an invoice paid outside Stripe.
    pub provider: String,
    pub amount_cents: i64,
    pub currency: String,
    /// Where to pay; only while the order is pending.
    pub checkout_url: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub subscription: Option<SubscriptionView>,
}

impl Order {
    pub fn is_subscription(&self) -> bool {
        self.billing_mode == "subscription"
    }

    /// A pending order past its expiry is expired, whether or not Stripe has said so yet.
    pub fn effective_status(&self, now: DateTime<Utc>) -> &str {
        if self.status == "pending" && self.expires_at <= now {
            "expired"
        } else {
            &self.status
        }
    }

    pub fn view(&self, now: DateTime<Utc>) -> OrderView {
        let status = self.effective_status(now).to_owned();
        let subscription = match (&self.subscription_status, self.is_subscription()) {
            (Some(subscription_status), true) => Some(SubscriptionView {
                order_no: self.order_no.clone(),
                status: subscription_status.clone(),
                current_period_end: self.current_period_end,
                cancel_at_period_end: self.cancel_at_period_end,
            }),
            _ => None,
        };
        OrderView {
            checkout_url: self.checkout_url.clone().filter(|_| status == "pending"),
            status,
            order_no: self.order_no.clone(),
            plan_id: self.plan_id,
            billing_mode: self.billing_mode.clone(),
            payment_method: self.payment_method.clone(),
            provider: self.provider.clone(),
            amount_cents: self.amount_cents,
            currency: self.currency.clone(),
            expires_at: self.expires_at,
            paid_at: self.paid_at,
            created_at: self.created_at,
            subscription,
        }
    }
}

/// What a new order is made of.
pub struct NewOrder<'a> {
    pub order_no: &'a str,
    pub user_id: Uuid,
    pub plan_id: i64,
    pub status: &'a str,
    pub billing_mode: &'a str,
    pub payment_method: &'a str,
    pub provider: &'a str,
    pub amount_cents: i64,
    pub currency: &'a str,
    pub credits: i64,
    pub idempotency_key: Option<&'a str>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

pub async fn insert(
    executor: impl PgExecutor<'_>,
    new: NewOrder<'_>,
) -> Result<Order, sqlx::Error> {
    sqlx::query_as!(
        Order,
        r#"INSERT INTO orders (order_no, user_id, plan_id, status, billing_mode, payment_method,
                               provider, amount_cents, currency, credits, idempotency_key,
                               expires_at, created_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
           RETURNING id, order_no, user_id, plan_id, status, billing_mode, payment_method,
                     provider, amount_cents, currency, credits, checkout_session_id, checkout_url,
                     checkout_attempts, stripe_customer_id, stripe_subscription_id,
                     subscription_status, current_period_end, cancel_at_period_end,
                     subscription_state_at, refunded_credits, expires_at, paid_at, created_at"#,
        new.order_no,
        new.user_id,
        new.plan_id,
        new.status,
        new.billing_mode,
        new.payment_method,
        new.provider,
        new.amount_cents,
        new.currency,
        new.credits,
        new.idempotency_key,
        new.expires_at,
        new.created_at
    )
    .fetch_one(executor)
    .await
}

pub async fn find_by_no(
    executor: impl PgExecutor<'_>,
    order_no: &str,
) -> Result<Option<Order>, sqlx::Error> {
    sqlx::query_as!(
        Order,
        r#"SELECT id, order_no, user_id, plan_id, status, billing_mode, payment_method, provider,
                  amount_cents, currency, credits, checkout_session_id, checkout_url,
                  checkout_attempts, stripe_customer_id, stripe_subscription_id,
                  subscription_status, current_period_end, cancel_at_period_end,
                  subscription_state_at, refunded_credits, expires_at, paid_at, created_at
           FROM orders WHERE order_no = $1"#,
        order_no
    )
    .fetch_optional(executor)
    .await
}

pub async fn find_by_idempotency_key(
    executor: impl PgExecutor<'_>,
    user_id: Uuid,
    key: &str,
) -> Result<Option<Order>, sqlx::Error> {
    sqlx::query_as!(
        Order,
        r#"SELECT id, order_no, user_id, plan_id, status, billing_mode, payment_method, provider,
                  amount_cents, currency, credits, checkout_session_id, checkout_url,
                  checkout_attempts, stripe_customer_id, stripe_subscription_id,
                  subscription_status, current_period_end, cancel_at_period_end,
                  subscription_state_at, refunded_credits, expires_at, paid_at, created_at
           FROM orders WHERE user_id = $1 AND idempotency_key = $2"#,
        user_id,
        key
    )
    .fetch_optional(executor)
    .await
}

/// Locks the order a Stripe object refers to: by its order number (metadata or
/// `client_reference_id`), else by its subscription or payment intent id.
pub async fn lock_for_event(
    connection: &mut PgConnection,
    order_no: Option<&str>,
    subscription_id: Option<&str>,
    payment_intent_id: Option<&str>,
) -> Result<Option<Order>, sqlx::Error> {
    sqlx::query_as!(
        Order,
        r#"SELECT id, order_no, user_id, plan_id, status, billing_mode, payment_method, provider,
                  amount_cents, currency, credits, checkout_session_id, checkout_url,
                  checkout_attempts, stripe_customer_id, stripe_subscription_id,
                  subscription_status, current_period_end, cancel_at_period_end,
                  subscription_state_at, refunded_credits, expires_at, paid_at, created_at
           FROM orders
           WHERE order_no = $1
              OR ($1 IS NULL AND $2::text IS NOT NULL AND stripe_subscription_id = $2)
              OR ($1 IS NULL AND $2::text IS NULL AND $3::text IS NOT NULL
                  AND stripe_payment_intent_id = $3)
           ORDER BY id LIMIT 1
           FOR UPDATE"#,
        order_no,
        subscription_id,
        payment_intent_id
    )
    .fetch_optional(connection)
    .await
}

pub async fn list_for_user(
    executor: impl PgExecutor<'_>,
    user_id: Uuid,
    status: Option<&str>,
    page: PageRequest,
) -> Result<Vec<Order>, sqlx::Error> {
    sqlx::query_as!(
        Order,
        r#"SELECT id, order_no, user_id, plan_id, status, billing_mode, payment_method, provider,
                  amount_cents, currency, credits, checkout_session_id, checkout_url,
                  checkout_attempts, stripe_customer_id, stripe_subscription_id,
                  subscription_status, current_period_end, cancel_at_period_end,
                  subscription_state_at, refunded_credits, expires_at, paid_at, created_at
           FROM orders WHERE user_id = $1 AND ($2::text IS NULL OR status = $2)
           ORDER BY id DESC LIMIT $3 OFFSET $4"#,
        user_id,
        status,
        page.limit(),
        page.offset()
    )
    .fetch_all(executor)
    .await
}

/// The account's active subscription that runs longest: its plan and its view.
pub async fn active_subscription(
    executor: impl PgExecutor<'_>,
    user_id: Uuid,
) -> Result<Option<(i64, SubscriptionView)>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT order_no, plan_id, subscription_status AS "status!", current_period_end,
                  cancel_at_period_end
           FROM orders
           WHERE user_id = $1 AND billing_mode = 'subscription'
             AND subscription_status IN ('active', 'trialing')
           ORDER BY current_period_end DESC NULLS LAST, id DESC LIMIT 1"#,
        user_id
    )
    .fetch_optional(executor)
    .await?;
    Ok(row.map(|row| {
        let view = SubscriptionView {
            order_no: row.order_no,
            status: row.status,
            current_period_end: row.current_period_end,
            cancel_at_period_end: row.cancel_at_period_end,
        };
        (row.plan_id, view)
    }))
}

pub async fn count_for_user(
    executor: impl PgExecutor<'_>,
    user_id: Uuid,
    status: Option<&str>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM orders
           WHERE user_id = $1 AND ($2::text IS NULL OR status = $2)"#,
        user_id,
        status
    )
    .fetch_one(executor)
    .await
}
