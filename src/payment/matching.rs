//! How a Stripe object finds its order (locked) and whether the amounts it reports agree with it.

use serde_json::Value;
use sqlx::PgConnection;

use super::error::PaymentError;
use super::fields::text;
use super::order::{self, Order};

/// What Stripe says was paid: the price before discounts, the discount, and the amount charged.
pub struct Paid<'a> {
    pub subtotal: Option<i64>,
    pub discount: i64,
    pub total: Option<i64>,
    pub currency: Option<&'a str>,
}

impl Paid<'_> {
    /// The amount charged and the discount, when they agree with the order: its currency, and
    /// its price either charged in full or, before a promotion code's discount, as the subtotal.
    /// Otherwise nothing is granted.
    pub fn agreed(&self, order: &Order, what: &str) -> Option<(i64, i64)> {
        let currency_matches = self
            .currency
            .is_some_and(|currency| currency.eq_ignore_ascii_case(&order.currency));
        let agreed = match (self.subtotal, self.total) {
            (_, Some(total)) if total == order.amount_cents => Some((total, 0)),
            (Some(subtotal), Some(total))
                if subtotal == order.amount_cents
                    && self.discount > 0
                    && total == subtotal - self.discount =>
            {
                Some((total, self.discount))
            }
            _ => None,
        }
        .filter(|_| currency_matches);
        if agreed.is_none() {
            tracing::error!(order_no = %order.order_no, total = ?self.total,
                subtotal = ?self.subtotal, discount = self.discount, currency = ?self.currency,
                expected_amount = order.amount_cents, expected_currency = %order.currency,
                "{what} disagrees with the order: nothing granted");
        }
        agreed
    }
}

/// How a Stripe object names its order.
pub struct OrderRef<'a> {
    pub order_no: Option<&'a str>,
    pub subscription_id: Option<&'a str>,
    pub payment_intent_id: Option<&'a str>,
}

/// The order a Stripe object of `kind` refers to, locked; None, logged, for an object that is
/// not ours.
pub async fn locked_order(
    connection: &mut PgConnection,
    kind: &str,
    object: &Value,
    refers: OrderRef<'_>,
) -> Result<Option<Order>, PaymentError> {
    let order = order::lock_for_event(
        connection,
        refers.order_no,
        refers.subscription_id,
        refers.payment_intent_id,
    )
    .await?;
    if order.is_none() {
        tracing::warn!(
            object_id = text(object, &["id"]).unwrap_or("?"),
            "{kind} refers to no order of ours: ignored"
        );
    }
    Ok(order)
}
