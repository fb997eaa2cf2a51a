//! The effects of invoice events: a paid period (and an upgrade's proration), a failed renewal,
//! the payment intent that paid an invoice, and a one-time payment's receipt.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;

use super::error::PaymentError;
use super::event::StripeEvent;
use super::fields::{id_of, number, text, timestamp};
use super::grant::{grant_credits, settle_payment};
use super::invoice::{self, NewInvoice};
use super::matching::{OrderRef, Paid, locked_order};
use super::notices::{notify, send_receipt};
use super::order::{self, Order, PlanChange};
use crate::ledger::{self, Movement};
use crate::mail::Email;
use crate::plans;

/// The subscription id of an invoice, in the current (`parent.subscription_details`) and the
/// older (`subscription`) shape of the API.
fn invoice_subscription(invoice: &Value) -> Option<&str> {
    text(invoice, &["parent", "subscription_details", "subscription"])
        .or_else(|| id_of(invoice, "subscription"))
}

fn invoice_order_no(invoice: &Value) -> Option<&str> {
    text(
        invoice,
        &["parent", "subscription_details", "metadata", "order_no"],
    )
    .or_else(|| text(invoice, &["subscription_details", "metadata", "order_no"]))
    .or_else(|| text(invoice, &["metadata", "order_no"]))
}

/// The order of an invoice's subscription, locked.
async fn invoice_order(
    connection: &mut PgConnection,
    invoice: &Value,
) -> Result<Option<Order>, PaymentError> {
    let refers = OrderRef {
        order_no: invoice_order_no(invoice),
        subscription_id: invoice_subscription(invoice),
        payment_intent_id: None,
    };
    locked_order(connection, "invoice", invoice, refers).await
}

pub async fn invoice_paid(
    connection: &mut PgConnection,
    event: &StripeEvent,
    invoice: &Value,
    now: DateTime<Utc>,
) -> Result<(), PaymentError> {
    let subscription = invoice_subscription(invoice);
    let Some(mut order) = invoice_order(connection, invoice).await? else {
        return Ok(());
    };
    let Some(invoice_id) = text(invoice, &["id"]) else {
        return Err(PaymentError::Internal(anyhow::anyhow!(
            "an invoice without an id"
        )));
    };
    match text(invoice, &["billing_reason"]) {
        Some("subscription_update") => {
            return upgrade_invoice_paid(connection, event, invoice, invoice_id, &order, now).await;
        }
        // A downgrade takes effect with the first renewal at the new price.
        Some("subscription_cycle") if order.pending_change == Some(PlanChange::Downgrade) => {
            if let Some(plan_id) = order.pending_plan_id
                && let Some(plan) = plans::find(&mut *connection, plan_id).await?
            {
                order::apply_pending_change(connection, order.id, &plan, 0, 0).await?;
                order = order::lock_by_id(connection, order.id).await?;
            }
        }
        _ => {}
    }
    let discounts = invoice
        .get("total_discount_amounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|discount| number(discount, &["amount"]))
        .sum();
    let paid = Paid {
        subtotal: number(invoice, &["subtotal"]),
        discount: discounts,
        total: number(invoice, &["amount_paid"]),
        currency: text(invoice, &["currency"]),
    };
    let Some((amount_paid, discount)) = paid.agreed(&order, "the invoice") else {
        return Ok(());
    };
    if let Some(subscription) = subscription {
        order::record_subscription_id(connection, order.id, subscription).await?;
    }
    let first_period = text(invoice, &["billing_reason"]) == Some("subscription_create");
    if first_period {
        settle_payment(connection, &order, event.created_at(), now).await?;
        order::record_amount_paid(connection, order.id, amount_paid, discount).await?;
        if order.subscription_status.is_none() {
            order::activate_subscription(connection, order.id, event.created_at(), None).await?;
        }
    } else {
        grant_credits(
            connection,
            &order,
            "invoice",
            invoice_id,
            &format!("invoice:{invoice_id}"),
            now,
        )
        .await?;
    }
    // The paid period: its lines' (the invoice's own period is the one billed before).
    let lines = || {
        invoice
            .get("lines")
            .and_then(|lines| lines.get("data"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
    };
    let period_start = lines()
        .filter_map(|line| number(line, &["period", "start"]))
        .min()
        .or_else(|| number(invoice, &["period_start"]))
        .and_then(timestamp);
    let period_end = lines()
        .filter_map(|line| number(line, &["period", "end"]))
        .max()
        .or_else(|| number(invoice, &["period_end"]))
        .and_then(timestamp);
    let paid = NewInvoice {
        order: &order,
        stripe_invoice_id: Some(invoice_id),
        stripe_payment_intent_id: id_of(invoice, "payment_intent"),
        number: text(invoice, &["number"]),
        amount_paid_cents: amount_paid,
        currency: &order.currency,
        period_start,
        period_end,
        hosted_invoice_url: text(invoice, &["hosted_invoice_url"]),
        pdf_url: text(invoice, &["invoice_pdf"]),
        credits_granted: order.credits,
        created_at: event.created_at(),
    };
    let document = paid.hosted_invoice_url.or(paid.pdf_url);
    if invoice::record(connection, paid).await? {
        send_receipt(connection, &order, amount_paid, document).await?;
    }
    // It only ever moves forward.
    order::extend_period(connection, order.id, period_end).await?;
    Ok(())
}

/// The proration invoice of an upgrade: it grants the difference in credits between the plans
/// in proportion to the share of the difference in price it charged (an upgrade mid-period
/// pays, and gets, the rest of the period's share).
async fn upgrade_invoice_paid(
    connection: &mut PgConnection,
    event: &StripeEvent,
    invoice: &Value,
    invoice_id: &str,
    order: &Order,
    now: DateTime<Utc>,
) -> Result<(), PaymentError> {
    let amount_paid = number(invoice, &["amount_paid"]).unwrap_or(0);
    let currency_matches = text(invoice, &["currency"])
        .is_some_and(|currency| currency.eq_ignore_ascii_case(&order.currency));
    if !currency_matches || amount_paid <= 0 || order.upgrade_amount_cents <= 0 {
        tracing::info!(order_no = %order.order_no, invoice_id, "a proration invoice grants nothing");
        return Ok(());
    }
    let share = i128::from(order.upgrade_credits)
        * i128::from(amount_paid.min(order.upgrade_amount_cents))
        / i128::from(order.upgrade_amount_cents);
    let credits = i64::try_from(share).unwrap_or(0);
    if credits > 0 {
        let movement = Movement {
            user_id: order.user_id,
            amount: credits,
            reason: "upgrade",
            reference: Some(invoice_id),
            key: &format!("invoice:{invoice_id}"),
        };
        ledger::apply(connection, movement, now).await?;
    }
    let paid = NewInvoice {
        order,
        stripe_invoice_id: Some(invoice_id),
        stripe_payment_intent_id: id_of(invoice, "payment_intent"),
        number: text(invoice, &["number"]),
        amount_paid_cents: amount_paid,
        currency: &order.currency,
        period_start: None,
        period_end: None,
        hosted_invoice_url: text(invoice, &["hosted_invoice_url"]),
        pdf_url: text(invoice, &["invoice_pdf"]),
        credits_granted: credits,
        created_at: event.created_at(),
    };
    let document = paid.hosted_invoice_url.or(paid.pdf_url);
    if invoice::record(connection, paid).await? {
        send_receipt(connection, order, amount_paid, document).await?;
    }
    Ok(())
}

/// Which invoice a payment intent paid: refunds and disputes name only the payment intent.
pub async fn invoice_payment_paid(
    connection: &mut PgConnection,
    invoice_payment: &Value,
) -> Result<(), PaymentError> {
    let invoice_id = id_of(invoice_payment, "invoice");
    let payment_intent = id_of(&invoice_payment["payment"], "payment_intent");
    if let (Some(invoice_id), Some(payment_intent)) = (invoice_id, payment_intent) {
        invoice::record_invoice_payment(connection, payment_intent, invoice_id).await?;
    }
    Ok(())
}

/// The receipt of a one-time payment.
pub async fn charge_succeeded(
    connection: &mut PgConnection,
    charge: &Value,
) -> Result<(), PaymentError> {
    if let Some(payment_intent) = id_of(charge, "payment_intent") {
        let receipt_url = text(charge, &["receipt_url"]);
        let receipt_number = text(charge, &["receipt_number"]);
        invoice::record_receipt(connection, payment_intent, receipt_url, receipt_number).await?;
    }
    Ok(())
}

/// A failed renewal: the subscription is past due (its limits last the grace period) and the
/// customer is told.
pub async fn invoice_failed(
    connection: &mut PgConnection,
    event: &StripeEvent,
    invoice: &Value,
    grace_days: i64,
) -> Result<(), PaymentError> {
    let Some(order) = invoice_order(connection, invoice).await? else {
        return Ok(());
    };
    if order::mark_past_due(connection, order.id, event.created_at()).await? {
        let failed = Email::PaymentFailed {
            order_no: order.order_no.clone(),
            grace_days,
        };
        notify(connection, &order, failed).await?;
    }
    Ok(())
}
