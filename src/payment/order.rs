//! Orders: their states, the row, the view clients see, and every statement on the `orders`
//! table (the order's column list is written once, in `order_query!`).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::api::PageRequest;

/// Declares a state stored as text: serialised and stored in snake_case, and an unknown stored
/// value is a decoding error, never a default.
macro_rules! stored_state {
    ($(#[$meta:meta])* $name:ident { $($variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema, sqlx::Type)]
        #[serde(rename_all = "snake_case")]
        #[sqlx(type_name = "text", rename_all = "snake_case")]
        pub enum $name { $($variant),+ }
    };
}

pub(super) use stored_state;

stored_state!(
    /// Where an order is in its life.
    OrderStatus { Pending, Paid, Expired, Failed, Cancelled, Refunded }
);
stored_state!(
    /// Paid once, or renewed every period.
    BillingMode { OneTime, Subscription }
);
stored_state!(
    /// How the customer pays; `manual` for an invoice paid outside Stripe.
    PaymentMethod { CreditCard, Alipay, WechatPay, Manual }
);
stored_state!(
    /// A plan change waiting for Stripe: an upgrade applies when the subscription is updated,
    /// a downgrade at the next renewal.
    PlanChange { Upgrade, Downgrade }
);
stored_state!(
    /// Who takes the money.
    PaymentProvider { Stripe, Manual }
);
stored_state!(
    /// A subscription's status, in Stripe's words (`canceled` with one l: the order's own
    /// status is `cancelled`).
    SubscriptionStatus { Incomplete, IncompleteExpired, Trialing, Active, PastDue, Canceled, Unpaid, Paused }
);

impl BillingMode {
    pub fn of(plan: &crate::plans::Plan) -> BillingMode {
        if plan.plan_type == crate::plans::PlanType::Subscription {
            BillingMode::Subscription
        } else {
            BillingMode::OneTime
        }
    }
}

/// `ord_` and 120 random bits: unique and not guessable or sequential.
pub fn new_order_no() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut bytes = [0u8; 15];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "ord_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

impl PaymentMethod {
    /// The methods a customer may choose (not `manual`).
    pub fn parse_chosen(value: &str) -> Option<PaymentMethod> {
        match value {
            "credit_card" => Some(PaymentMethod::CreditCard),
            "alipay" => Some(PaymentMethod::Alipay),
            "wechat_pay" => Some(PaymentMethod::WechatPay),
            _ => None,
        }
    }
}

impl OrderStatus {
    pub fn parse(value: &str) -> Option<OrderStatus> {
        serde_json::from_value(serde_json::Value::String(value.to_owned())).ok()
    }
}

impl SubscriptionStatus {
    pub fn parse(value: &str) -> Option<SubscriptionStatus> {
        serde_json::from_value(serde_json::Value::String(value.to_owned())).ok()
    }
}

/// A row of `orders`.
#[derive(Clone, Debug)]
pub struct Order {
    pub id: i64,
    pub order_no: String,
    pub user_id: Uuid,
    pub plan_id: i64,
    pub status: OrderStatus,
    pub billing_mode: BillingMode,
    pub payment_method: PaymentMethod,
    pub provider: PaymentProvider,
    pub amount_cents: i64,
    pub currency: String,
    pub credits: i64,
    pub checkout_session_id: Option<String>,
    pub checkout_url: Option<String>,
    pub checkout_attempts: i32,
    pub stripe_customer_id: Option<String>,
    pub stripe_subscription_id: Option<String>,
    pub subscription_status: Option<SubscriptionStatus>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub subscription_state_at: Option<DateTime<Utc>>,
    pub refunded_credits: i64,
    pub amount_paid_cents: Option<i64>,
    pub discount_cents: i64,
    pub pending_plan_id: Option<i64>,
    pub pending_change: Option<PlanChange>,
    pub upgrade_credits: i64,
    pub upgrade_amount_cents: i64,
    pub expires_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// `query_as!(Order, ..)` with the order's columns: `$head` comes before them (`SELECT`, or an
/// `INSERT .. RETURNING`) and `$tail` after (`FROM orders WHERE ..`).
macro_rules! order_query {
    ($head:literal, $tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            Order,
            $head + r#" id, order_no, user_id, plan_id, status AS "status: OrderStatus",
                  billing_mode AS "billing_mode: BillingMode",
                  payment_method AS "payment_method: PaymentMethod",
                  provider AS "provider: PaymentProvider", amount_cents, currency, credits,
                  checkout_session_id, checkout_url, checkout_attempts, stripe_customer_id,
                  stripe_subscription_id,
                  subscription_status AS "subscription_status: SubscriptionStatus",
                  current_period_end, cancel_at_period_end, subscription_state_at,
                  refunded_credits, amount_paid_cents, discount_cents, pending_plan_id,
                  pending_change AS "pending_change: PlanChange", upgrade_credits,
                  upgrade_amount_cents, expires_at, paid_at, created_at "# + $tail
            $(, $arg)*
        )
    };
}

/// The subscription part of the status and of an order.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SubscriptionView {
    pub order_no: String,
    pub status: SubscriptionStatus,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    /// The plan a change asked for, until Stripe confirms it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_plan_id: Option<i64>,
}

/// An order as clients see it.
#[derive(Serialize, ToSchema)]
pub struct OrderView {
    pub order_no: String,
    pub status: OrderStatus,
    pub plan_id: i64,
    pub billing_mode: BillingMode,
    pub payment_method: PaymentMethod,
    pub provider: PaymentProvider,
    pub amount_cents: i64,
    /// What the customer paid (the price less a promotion code's discount); null until paid.
    pub amount_paid_cents: Option<i64>,
    pub discount_cents: i64,
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
        self.billing_mode == BillingMode::Subscription
    }

    /// A pending order past its expiry is expired, whether or not Stripe has said so yet.
    pub fn effective_status(&self, now: DateTime<Utc>) -> OrderStatus {
        if self.status == OrderStatus::Pending && self.expires_at <= now {
            OrderStatus::Expired
        } else {
            self.status
        }
    }

    pub fn view(&self, now: DateTime<Utc>) -> OrderView {
        let status = self.effective_status(now);
        let subscription = match (self.subscription_status, self.is_subscription()) {
            (Some(subscription_status), true) => Some(SubscriptionView {
                order_no: self.order_no.clone(),
                status: subscription_status,
                current_period_end: self.current_period_end,
                cancel_at_period_end: self.cancel_at_period_end,
                pending_plan_id: self.pending_plan_id,
            }),
            _ => None,
        };
        OrderView {
            checkout_url: self
                .checkout_url
                .clone()
                .filter(|_| status == OrderStatus::Pending),
            status,
            order_no: self.order_no.clone(),
            plan_id: self.plan_id,
            billing_mode: self.billing_mode,
            payment_method: self.payment_method,
            provider: self.provider,
            amount_cents: self.amount_cents,
            amount_paid_cents: self.amount_paid_cents,
            discount_cents: self.discount_cents,
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
    pub billing_mode: BillingMode,
    pub payment_method: PaymentMethod,
    pub provider: PaymentProvider,
    pub amount_cents: i64,
    pub currency: &'a str,
    pub credits: i64,
    pub idempotency_key: Option<&'a str>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// Inserts a pending order.
pub async fn insert(
    executor: impl PgExecutor<'_>,
    new: NewOrder<'_>,
) -> Result<Order, sqlx::Error> {
    order_query!(
        r#"INSERT INTO orders (order_no, user_id, plan_id, status, billing_mode, payment_method,
                               provider, amount_cents, currency, credits, idempotency_key,
                               expires_at, created_at)
           VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $8, $9, $10, $11, $12)
           RETURNING"#,
        "",
        new.order_no,
        new.user_id,
        new.plan_id,
        new.billing_mode as BillingMode,
        new.payment_method as PaymentMethod,
        new.provider as PaymentProvider,
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
    order_query!("SELECT", "FROM orders WHERE order_no = $1", order_no)
        .fetch_optional(executor)
        .await
}

pub async fn find_by_idempotency_key(
    executor: impl PgExecutor<'_>,
    user_id: Uuid,
    key: &str,
) -> Result<Option<Order>, sqlx::Error> {
    order_query!(
        "SELECT",
        "FROM orders WHERE user_id = $1 AND idempotency_key = $2",
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
    order_query!(
        "SELECT",
        r#"FROM orders
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

/// Orders newest first: one user's, or everyone's when `user_id` is `None` (the admin's view).
pub async fn list(
    executor: impl PgExecutor<'_>,
    user_id: Option<Uuid>,
    status: Option<OrderStatus>,
    page: PageRequest,
) -> Result<Vec<Order>, sqlx::Error> {
    order_query!(
        "SELECT",
        r#"FROM orders WHERE ($1::uuid IS NULL OR user_id = $1)
             AND ($2::text IS NULL OR status = $2)
           ORDER BY id DESC LIMIT $3 OFFSET $4"#,
        user_id,
        status as Option<OrderStatus>,
        page.limit(),
        page.offset()
    )
    .fetch_all(executor)
    .await
}

pub async fn count(
    executor: impl PgExecutor<'_>,
    user_id: Option<Uuid>,
    status: Option<OrderStatus>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM orders
           WHERE ($1::uuid IS NULL OR user_id = $1) AND ($2::text IS NULL OR status = $2)"#,
        user_id,
        status as Option<OrderStatus>
    )
    .fetch_one(executor)
    .await
}

/// The account's live subscription that runs longest: its plan and its view. Live: active or
/// trialing with a period that ended after `grace_start` (or no known end), or past due since
/// after `grace_start`; and not refunded or disputed.
pub async fn active_subscription(
    executor: impl PgExecutor<'_>,
    user_id: Uuid,
    grace_start: DateTime<Utc>,
) -> Result<Option<(i64, SubscriptionView)>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT order_no, plan_id,
                  subscription_status AS "status!: SubscriptionStatus", current_period_end,
                  cancel_at_period_end
           FROM orders
           WHERE user_id = $1 AND billing_mode = 'subscription' AND billing_hold IS NULL
             AND ((subscription_status IN ('active', 'trialing')
                   AND (current_period_end IS NULL OR current_period_end > $2))
               OR (subscription_status = 'past_due' AND subscription_state_at > $2))
           ORDER BY current_period_end DESC NULLS LAST, id DESC LIMIT 1"#,
        user_id,
        grace_start
    )
    .fetch_optional(executor)
    .await?;
    Ok(row.map(|row| {
        let view = SubscriptionView {
            order_no: row.order_no,
            status: row.status,
            current_period_end: row.current_period_end,
            cancel_at_period_end: row.cancel_at_period_end,
            pending_plan_id: None,
        };
        (row.plan_id, view)
    }))
}

/// `active_subscription`'s plan for many users at once: user → plan id, for those that hold
/// one (the same choice: the live subscription that runs longest).
pub async fn active_subscription_plans(
    executor: impl PgExecutor<'_>,
    users: &[Uuid],
    grace_start: DateTime<Utc>,
) -> Result<HashMap<Uuid, i64>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT DISTINCT ON (user_id) user_id, plan_id
           FROM orders
           WHERE user_id = ANY($1) AND billing_mode = 'subscription' AND billing_hold IS NULL
             AND ((subscription_status IN ('active', 'trialing')
                   AND (current_period_end IS NULL OR current_period_end > $2))
               OR (subscription_status = 'past_due' AND subscription_state_at > $2))
           ORDER BY user_id, current_period_end DESC NULLS LAST, id DESC"#,
        users,
        grace_start
    )
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.user_id, row.plan_id))
        .collect())
}

/// Whether the user holds a subscription Stripe still bills or may bill: active, trialing or
/// past due. A second one would be billed too, so it cannot be bought.
pub async fn has_live_subscription(
    executor: impl PgExecutor<'_>,
    user_id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM orders
             WHERE user_id = $1 AND billing_mode = 'subscription'
               AND subscription_status IN ('active', 'trialing', 'past_due')) AS "exists!""#,
        user_id
    )
    .fetch_one(executor)
    .await
}

/// The user's pending subscription orders other than `except`.
pub async fn pending_subscriptions(
    executor: impl PgExecutor<'_>,
    user_id: Uuid,
    except: i64,
) -> Result<Vec<Order>, sqlx::Error> {
    order_query!(
        "SELECT",
        r#"FROM orders
           WHERE user_id = $1 AND id <> $2 AND status = 'pending'
             AND billing_mode = 'subscription'"#,
        user_id,
        except
    )
    .fetch_all(executor)
    .await
}

/// Stores a pending order's new Checkout Session and expiry; false when it is no longer pending.
pub async fn set_checkout(
    executor: impl PgExecutor<'_>,
    id: i64,
    session_id: &str,
    url: &str,
    attempt: i32,
    expires_at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query!(
        r#"UPDATE orders SET checkout_session_id = $2, checkout_url = $3, checkout_attempts = $4,
                  expires_at = $5
           WHERE id = $1 AND status = 'pending'"#,
        id,
        session_id,
        url,
        attempt,
        expires_at
    )
    .execute(executor)
    .await?;
    Ok(updated.rows_affected() == 1)
}

pub async fn set_cancel_at_period_end(
    executor: impl PgExecutor<'_>,
    id: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE orders SET cancel_at_period_end = true WHERE id = $1",
        id
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// Marks an order paid, from pending, expired or failed (money that arrived is honoured); a
/// settled order (paid, cancelled, refunded) is left as it is.
pub async fn mark_paid(
    connection: &mut PgConnection,
    id: i64,
    paid_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE orders SET status = 'paid', paid_at = $2, checkout_url = NULL
           WHERE id = $1 AND status IN ('pending', 'expired', 'failed')"#,
        id,
        paid_at
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Closes a pending order as `failed` or `expired`.
pub async fn close_pending(
    executor: impl PgExecutor<'_>,
    id: i64,
    status: OrderStatus,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE orders SET status = $2, checkout_url = NULL
           WHERE id = $1 AND status = 'pending'"#,
        id,
        status as OrderStatus
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// Remembers the Stripe ids a Checkout Session names, keeping those already known.
pub async fn record_stripe_ids(
    connection: &mut PgConnection,
    id: i64,
    customer: Option<&str>,
    subscription: Option<&str>,
    payment_intent: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE orders SET stripe_customer_id = COALESCE($2, stripe_customer_id),
                  stripe_subscription_id = COALESCE($3, stripe_subscription_id),
                  stripe_payment_intent_id = COALESCE($4, stripe_payment_intent_id)
           WHERE id = $1"#,
        id,
        customer,
        subscription,
        payment_intent
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// A subscription becomes active as of `at` (for `period_end`, when given) unless a newer
/// event already changed it or it was canceled: nothing revives a canceled subscription.
pub async fn activate_subscription(
    connection: &mut PgConnection,
    id: i64,
    at: DateTime<Utc>,
    period_end: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE orders SET subscription_status = 'active', subscription_state_at = $2,
                  current_period_end = COALESCE($3, current_period_end)
           WHERE id = $1 AND subscription_status IS DISTINCT FROM 'canceled'
             AND (subscription_state_at IS NULL OR subscription_state_at < $2)"#,
        id,
        at,
        period_end
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// A failed renewal makes the subscription past due, unless it was canceled, is past due
/// already (its grace runs from the first failure) or a newer event changed it; true when it
/// became past due now.
pub async fn mark_past_due(
    connection: &mut PgConnection,
    id: i64,
    at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query!(
        r#"UPDATE orders SET subscription_status = 'past_due', subscription_state_at = $2
           WHERE id = $1 AND subscription_status IS DISTINCT FROM 'canceled'
             AND subscription_status IS DISTINCT FROM 'past_due'
             AND (subscription_state_at IS NULL OR subscription_state_at <= $2)"#,
        id,
        at
    )
    .execute(connection)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// What `customer.subscription.updated` or `.deleted` says, applied unless an older event:
/// the status, the cancellation flag, the period, the id; a deleted subscription cancels its
/// paid order. False when the event was older than the recorded state.
pub async fn apply_subscription_change(
    connection: &mut PgConnection,
    id: i64,
    change: SubscriptionChange<'_>,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query!(
        r#"UPDATE orders SET subscription_status = $2, cancel_at_period_end = $3,
                  current_period_end = COALESCE(GREATEST(current_period_end, $4),
                                                current_period_end, $4),
                  subscription_state_at = $5,
                  stripe_subscription_id = COALESCE(stripe_subscription_id, $6),
                  status = CASE WHEN $7 AND status = 'paid' THEN 'cancelled' ELSE status END
           WHERE id = $1 AND subscription_status IS DISTINCT FROM 'canceled'
             AND (subscription_state_at IS NULL OR subscription_state_at <= $5)"#,
        id,
        change.status as SubscriptionStatus,
        change.cancel_at_period_end,
        change.period_end,
        change.at,
        change.subscription_id,
        change.deleted
    )
    .execute(connection)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// A subscription event's news.
pub struct SubscriptionChange<'a> {
    pub status: SubscriptionStatus,
    pub cancel_at_period_end: bool,
    pub period_end: Option<DateTime<Utc>>,
    pub at: DateTime<Utc>,
    pub subscription_id: Option<&'a str>,
    pub deleted: bool,
}

/// Remembers an invoice's subscription id when the order does not know it yet.
pub async fn record_subscription_id(
    connection: &mut PgConnection,
    id: i64,
    subscription_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE orders SET stripe_subscription_id = COALESCE(stripe_subscription_id, $2)
           WHERE id = $1"#,
        id,
        subscription_id
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Moves the paid period's end forward (never back).
pub async fn extend_period(
    connection: &mut PgConnection,
    id: i64,
    period_end: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE orders SET current_period_end = GREATEST(current_period_end, $2)
           WHERE id = $1"#,
        id,
        period_end
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Adds to the credits refunds of the order's payments took back and to what they could not
/// take.
pub async fn record_refund(
    connection: &mut PgConnection,
    id: i64,
    refunded_credits: i64,
    shortfall: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE orders SET refunded_credits = refunded_credits + $2,
                  refund_shortfall = refund_shortfall + $3
           WHERE id = $1"#,
        id,
        refunded_credits,
        shortfall
    )
    .execute(connection)
    .await?;
    Ok(())
}

pub async fn mark_refunded(connection: &mut PgConnection, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query!("UPDATE orders SET status = 'refunded' WHERE id = $1", id)
        .execute(connection)
        .await?;
    Ok(())
}

/// Locks an order by its id.
pub async fn lock_by_id(connection: &mut PgConnection, id: i64) -> Result<Order, sqlx::Error> {
    order_query!("SELECT", "FROM orders WHERE id = $1 FOR UPDATE", id)
        .fetch_one(connection)
        .await
}

/// Why a subscription no longer sets the account's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BillingHold {
    /// Its payment was refunded in full.
    Refunded,
    /// Its payment is disputed at the bank.
    Disputed,
}

impl BillingHold {
    fn as_str(self) -> &'static str {
        match self {
            BillingHold::Refunded => "refunded",
            BillingHold::Disputed => "disputed",
        }
    }
}

/// Puts a hold on an order's subscription (a refund's hold is not replaced by a dispute's).
pub async fn set_billing_hold(
    connection: &mut PgConnection,
    id: i64,
    hold: BillingHold,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE orders SET billing_hold = COALESCE(billing_hold, $2) WHERE id = $1",
        id,
        hold.as_str()
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Lifts a hold of this kind.
pub async fn clear_billing_hold(
    connection: &mut PgConnection,
    id: i64,
    hold: BillingHold,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE orders SET billing_hold = NULL WHERE id = $1 AND billing_hold = $2",
        id,
        hold.as_str()
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Records what the customer paid for the order and the discount a promotion code gave.
pub async fn record_amount_paid(
    connection: &mut PgConnection,
    id: i64,
    amount_paid_cents: i64,
    discount_cents: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE orders SET amount_paid_cents = $2, discount_cents = $3
           WHERE id = $1 AND amount_paid_cents IS NULL"#,
        id,
        amount_paid_cents,
        discount_cents
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// The user's live Stripe-billed subscription (active, trialing or past due, not refunded or
/// disputed), locked: the one a plan change applies to.
pub async fn lock_live_subscription(
    connection: &mut PgConnection,
    user_id: Uuid,
) -> Result<Option<Order>, sqlx::Error> {
    order_query!(
        "SELECT",
        r#"FROM orders
           WHERE user_id = $1 AND billing_mode = 'subscription' AND billing_hold IS NULL
             AND subscription_status IN ('active', 'trialing', 'past_due')
           ORDER BY current_period_end DESC NULLS LAST, id DESC LIMIT 1
           FOR UPDATE"#,
        user_id
    )
    .fetch_optional(connection)
    .await
}

/// Records the plan a change asks for, until Stripe confirms it.
pub async fn set_pending_change(
    connection: &mut PgConnection,
    id: i64,
    plan_id: i64,
    change: PlanChange,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE orders SET pending_plan_id = $2, pending_change = $3 WHERE id = $1",
        id,
        plan_id,
        change as PlanChange
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Moves the order to its pending plan (what renewals charge and grant from now on); an
/// upgrade remembers the difference in credits and price its proration invoice settles.
pub async fn apply_pending_change(
    connection: &mut PgConnection,
    id: i64,
    plan: &crate::plans::Plan,
    upgrade_credits: i64,
    upgrade_amount_cents: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE orders SET plan_id = $2, amount_cents = $3, credits = $4,
                  upgrade_credits = $5, upgrade_amount_cents = $6,
                  pending_plan_id = NULL, pending_change = NULL
           WHERE id = $1"#,
        id,
        plan.id,
        plan.amount_cents,
        plan.credits,
        upgrade_credits,
        upgrade_amount_cents
    )
    .execute(connection)
    .await?;
    Ok(())
}
