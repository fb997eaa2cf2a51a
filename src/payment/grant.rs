//! What a payment does to an order and the account: the order moves out of `pending` once, and
//! each paid order or period adds its credits once, keyed in the ledger.

use chrono::{DateTime, Duration, Utc};
use sqlx::PgConnection;

use super::error::PaymentError;
use super::invoice::{self, NewInvoice};
use super::order::{self, BillingMode, NewOrder, Order, PaymentMethod, PaymentProvider};
use crate::ledger::{self, Movement};
use crate::plans::Plan;

/// Marks `order` paid (from pending, expired or failed: money that arrived is honoured) and
/// grants its credits under the key `order:{order_no}`, which a subscription's first invoice
/// shares with its checkout: one grant, whichever arrives first. A settled order (paid,
/// cancelled, refunded) is left as it is.
pub async fn settle_payment(
    connection: &mut PgConnection,
    order: &Order,
    paid_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), PaymentError> {
    order::mark_paid(connection, order.id, paid_at).await?;
    let key = format!("order:{}", order.order_no);
    grant_credits(connection, order, "order", &order.order_no, &key, now).await
}

/// Adds the order's credits (one period's, for a subscription) under `ledger_key`.
pub async fn grant_credits(
    connection: &mut PgConnection,
    order: &Order,
    reason: &str,
    reference: &str,
    ledger_key: &str,
    now: DateTime<Utc>,
) -> Result<(), PaymentError> {
    let movement = Movement {
        user_id: order.user_id,
        amount: order.credits,
        reason,
        reference: Some(reference),
        key: ledger_key,
    };
    ledger::apply(connection, movement, now).await?;
    Ok(())
}

/// An order paid outside Stripe (an admin's manual order, a redeemed code): recorded paid,
/// its credits granted, and a subscription plan active for one period (a month or a year).
pub async fn grant_manual_order(
    connection: &mut PgConnection,
    user_id: uuid::Uuid,
    plan: &Plan,
    now: DateTime<Utc>,
) -> Result<Order, PaymentError> {
    let order_no = order::new_order_no();
    let order = order::insert(
        &mut *connection,
        NewOrder {
            order_no: &order_no,
            user_id,
            plan_id: plan.id,
            billing_mode: BillingMode::of(plan),
            payment_method: PaymentMethod::Manual,
            provider: PaymentProvider::Manual,
            amount_cents: plan.amount_cents,
            currency: &plan.currency,
            credits: plan.credits,
            idempotency_key: None,
            expires_at: now,
            created_at: now,
        },
    )
    .await?;
    settle_payment(connection, &order, now, now).await?;
    let period = if plan.interval.as_deref() == Some("year") {
        Duration::days(365)
    } else {
        Duration::days(30)
    };
    if order.is_subscription() {
        order::activate_subscription(connection, order.id, now, Some(now + period)).await?;
    }
    // Listed with the invoices, for the accounts; it names no Stripe object.
    let record = NewInvoice {
        order: &order,
        stripe_invoice_id: None,
        stripe_payment_intent_id: None,
        number: None,
        amount_paid_cents: order.amount_cents,
        currency: &order.currency,
        period_start: order.is_subscription().then_some(now),
        period_end: order.is_subscription().then_some(now + period),
        hosted_invoice_url: None,
        pdf_url: None,
        credits_granted: order.credits,
        created_at: now,
    };
    invoice::record(connection, record).await?;
    Ok(order)
}
