//! What a payment does to an order and the account: the order moves out of `pending` once, and
//! each paid order or period adds its credits once, keyed in the ledger.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::error::PaymentError;
use super::order::{self, Order};
use crate::ledger::{self, Movement};

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
