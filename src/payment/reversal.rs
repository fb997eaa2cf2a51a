//! Money that goes back to the customer: a refund takes back its share of what the refunded
//! payment granted, a dispute takes back all of it and freezes the account until the dispute is
//! won. Each finds its payment through the payment intent it names, which a one-time payment
//! records at checkout and a subscription's invoice through `invoice_payment.paid`. Every
//! function runs inside the transaction that records the event.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;

use super::error::PaymentError;
use super::fields::{boolean, id_of, number, text};
use super::invoice::{self, Invoice, InvoiceStatus};
use super::order::{self, BillingHold, Order};
use crate::auth::users;
use crate::ledger::{self, Movement};

/// The payment a charge or a dispute names, locked with its order; None, logged, for one that
/// is not ours.
async fn locked_payment(
    connection: &mut PgConnection,
    kind: &str,
    object: &Value,
) -> Result<Option<(Invoice, Order)>, PaymentError> {
    let payment = match id_of(object, "payment_intent") {
        Some(payment_intent) => invoice::lock_by_payment_intent(connection, payment_intent).await?,
        None => None,
    };
    let Some(payment) = payment else {
        tracing::warn!(
            object_id = text(object, &["id"]).unwrap_or("?"),
            "{kind} refers to no payment of ours: ignored"
        );
        return Ok(None);
    };
    let order = order::lock_by_id(connection, payment.order_id).await?;
    Ok(Some((payment, order)))
}

/// How many of `wanted` credits the account can give back now (never below zero: credits that
/// a gateway lease holds are spoken for). A dispute needs it before it writes its entry, whose
/// reference names the shortfall.
async fn takeable(
    connection: &mut PgConnection,
    order: &Order,
    wanted: i64,
) -> Result<i64, PaymentError> {
    let (balance, reserved) = ledger::lock_account(connection, order.user_id).await?;
    Ok(wanted.clamp(0, (balance - reserved).max(0)))
}

/// A refund takes back the refunded share of the payment's credits, down to zero; what could
/// not be taken is recorded on the order as a shortfall. A payment refunded in full refunds a
/// one-time order and stops a subscription from setting the account's limits.
pub async fn charge_refunded(
    connection: &mut PgConnection,
    charge: &Value,
    now: DateTime<Utc>,
) -> Result<(), PaymentError> {
    let Some((payment, order)) = locked_payment(connection, "charge", charge).await? else {
        return Ok(());
    };
    let (Some(charge_id), Some(amount), Some(refunded)) = (
        text(charge, &["id"]),
        number(charge, &["amount"]),
        number(charge, &["amount_refunded"]),
    ) else {
        return Err(PaymentError::Internal(anyhow::anyhow!(
            "a charge without id or amounts"
        )));
    };
    let currency_matches = text(charge, &["currency"])
        .is_some_and(|currency| currency.eq_ignore_ascii_case(&order.currency));
    if !currency_matches || amount <= 0 {
        tracing::error!(order_no = %order.order_no, "the refunded charge disagrees with the order");
        return Ok(());
    }
    let in_full = boolean(charge, &["refunded"]).unwrap_or(refunded >= amount);
    let share =
        i128::from(payment.credits_granted) * i128::from(refunded.min(amount)) / i128::from(amount);
    let target = i64::try_from(share).unwrap_or(payment.credits_granted);
    let owed = target - payment.credits_refunded;
    if owed > 0 {
        let movement = Movement {
            user_id: order.user_id,
            amount: -owed,
            reason: "refund",
            reference: Some(&order.order_no),
            key: &format!("refund:{charge_id}:{refunded}"),
        };
        let taken = ledger::take_up_to(connection, movement, now).await?;
        if taken < owed {
            tracing::warn!(order_no = %order.order_no, owed, taken,
                "the refund took back fewer credits than were granted");
        }
        order::record_refund(connection, order.id, owed, owed - taken).await?;
    }
    let status = if in_full {
        InvoiceStatus::Refunded
    } else {
        InvoiceStatus::PartiallyRefunded
    };
    invoice::set_taken_back(
        connection,
        payment.id,
        target.max(payment.credits_refunded),
        status,
    )
    .await?;
    if in_full {
        if order.is_subscription() {
            order::set_billing_hold(connection, order.id, BillingHold::Refunded).await?;
        } else {
            order::mark_refunded(connection, order.id).await?;
        }
    }
    Ok(())
}

/// A dispute opened: what the payment granted and was not yet taken back is taken (down to
/// zero; the shortfall is written in the ledger entry's reference and on the dispute), the
/// subscription stops setting limits and the account is frozen with the reason `dispute`.
pub async fn dispute_opened(
    connection: &mut PgConnection,
    dispute: &Value,
    now: DateTime<Utc>,
) -> Result<(), PaymentError> {
    let Some(dispute_id) = text(dispute, &["id"]) else {
        return Err(PaymentError::Internal(anyhow::anyhow!(
            "a dispute without an id"
        )));
    };
    let Some((payment, order)) = locked_payment(connection, "dispute", dispute).await? else {
        return Ok(());
    };
    let owed = (payment.credits_granted - payment.credits_refunded).max(0);
    let taken = takeable(connection, &order, owed).await?;
    let shortfall = owed - taken;
    if !invoice::open_dispute(connection, dispute_id, &payment, taken, shortfall, now).await? {
        return Ok(()); // a redelivery under another event id
    }
    let reference = if shortfall > 0 {
        format!(
            "{dispute_id} of {}: {shortfall} credits short",
            order.order_no
        )
    } else {
        format!("{dispute_id} of {}", order.order_no)
    };
    let movement = Movement {
        user_id: order.user_id,
        amount: -taken,
        reason: "dispute",
        reference: Some(&reference),
        key: &format!("dispute:{dispute_id}"),
    };
    ledger::apply(connection, movement, now).await?;
    if shortfall > 0 {
        tracing::warn!(order_no = %order.order_no, owed, taken,
            "the dispute took back fewer credits than were granted");
    }
    invoice::set_taken_back(
        connection,
        payment.id,
        payment.credits_refunded + owed,
        InvoiceStatus::Disputed,
    )
    .await?;
    order::set_billing_hold(connection, order.id, BillingHold::Disputed).await?;
    users::freeze_for_dispute(connection, order.user_id).await?;
    Ok(())
}

/// A dispute closed: won (or an inquiry closed without a charge-back) gives back what it took
/// and lifts the hold and the freeze when no other dispute of the account is open; lost keeps
/// both for an admin to decide.
pub async fn dispute_closed(
    connection: &mut PgConnection,
    dispute: &Value,
    now: DateTime<Utc>,
) -> Result<(), PaymentError> {
    let Some(dispute_id) = text(dispute, &["id"]) else {
        return Err(PaymentError::Internal(anyhow::anyhow!(
            "a dispute without an id"
        )));
    };
    let won = matches!(text(dispute, &["status"]), Some("won" | "warning_closed"));
    let Some(closed) = invoice::close_dispute(connection, dispute_id, won, now).await? else {
        tracing::warn!(
            dispute_id,
            "a closed dispute that was never opened here: ignored"
        );
        return Ok(());
    };
    if !won {
        return Ok(());
    }
    let payment = invoice::lock_by_id(connection, closed.invoice_id).await?;
    let order = order::lock_by_id(connection, payment.order_id).await?;
    let movement = Movement {
        user_id: order.user_id,
        amount: closed.credits_taken,
        reason: "dispute_won",
        reference: Some(&format!("{dispute_id} of {}", order.order_no)),
        key: &format!("dispute-won:{dispute_id}"),
    };
    ledger::apply(connection, movement, now).await?;
    let restored = payment.credits_refunded - closed.credits_taken - closed.shortfall;
    let status = if restored > 0 {
        InvoiceStatus::PartiallyRefunded
    } else {
        InvoiceStatus::Paid
    };
    invoice::set_taken_back(connection, payment.id, restored.max(0), status).await?;
    if !invoice::has_open_dispute(connection, Some(order.id), order.user_id).await? {
        order::clear_billing_hold(connection, order.id, BillingHold::Disputed).await?;
    }
    if !invoice::has_open_dispute(connection, None, order.user_id).await? {
        users::lift_dispute_freeze(connection, order.user_id).await?;
    }
    Ok(())
}
