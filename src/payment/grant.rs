//! What a payment does to an order and the account: the order moves out of `pending` once, and
//! each paid order or period adds its credits once, keyed in the ledger.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::error::PaymentError;
use super::order::Order;
use crate::ledger::{self, Movement};

/// Marks `order` paid (from pending, expired or failed: money that arrived is honoured) and
/// grants its credits under `ledger_key`. A settled order (paid, cancelled, refunded) is left
/// as it is; the credits of its key are still granted at most once.
pub async fn settle_payment(
    connection: &mut PgConnection,
    order: &Order,
    paid_at: DateTime<Utc>,
    ledger_key: &str,
    now: DateTime<Utc>,
) -> Result<(), PaymentError> {
    sqlx::query!(
        r#"UPDATE orders SET status = 'paid', paid_at = $2, checkout_url = NULL
           WHERE id = $1 AND status IN ('pending', 'expired', 'failed')"#,
        order.id,
        paid_at
    )
    .execute(&mut *connection)
    .await?;
    grant_credits(connection, order, "order", &order.order_no, ledger_key, now).await
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
