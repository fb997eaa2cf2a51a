//! The effect of each Stripe event type on orders, subscriptions and credits (invoices in
//! `invoice_events.rs`, refunds and disputes in `reversal.rs`). Every function
//! runs inside the transaction that records the event, holding the order's row lock.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;

use super::error::PaymentError;
use super::event::StripeEvent;
use super::fields::{boolean, id_of, number, text, timestamp};
use super::grant::settle_payment;
use super::invoice::{self, NewInvoice};
use super::invoice_events;
use super::matching::{OrderRef, Paid, locked_order};
use super::notices::{notify, send_receipt};
use super::order::{self, Order, OrderStatus, PlanChange, SubscriptionChange, SubscriptionStatus};
use super::reversal;
use crate::mail::Email;
use crate::plans;

/// What the effects need besides the event.
pub struct Effects {
    pub now: DateTime<Utc>,
    /// `BILLING_GRACE_DAYS`, told in the failed-payment email.
    pub grace_days: i64,
}

pub async fn apply(
    connection: &mut PgConnection,
    event: &StripeEvent,
    effects: &Effects,
) -> Result<(), PaymentError> {
    let now = effects.now;
    let object = &event.data.object;
    match event.event_type.as_str() {
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
            checkout_paid(connection, event, object, now).await
        }
        "checkout.session.async_payment_failed" => {
            checkout_closed(connection, object, OrderStatus::Failed).await
        }
        "checkout.session.expired" => {
            checkout_closed(connection, object, OrderStatus::Expired).await
        }
        "invoice.paid" => invoice_events::invoice_paid(connection, event, object, now).await,
        "invoice.payment_failed" => {
            invoice_events::invoice_failed(connection, event, object, effects.grace_days).await
        }
        "customer.subscription.updated" | "customer.subscription.deleted" => {
            subscription_changed(connection, event, object).await
        }
        "charge.refunded" => reversal::charge_refunded(connection, object, now).await,
        "charge.dispute.created" => reversal::dispute_opened(connection, object, now).await,
        "charge.dispute.closed" => reversal::dispute_closed(connection, object, now).await,
        "charge.succeeded" => invoice_events::charge_succeeded(connection, object).await,
        "invoice_payment.paid" => invoice_events::invoice_payment_paid(connection, object).await,
        other => {
            tracing::debug!(event_type = other, "Stripe event type needs nothing");
            Ok(())
        }
    }
}

/// The order a Checkout Session was made for (its metadata, else `client_reference_id`),
/// locked; None, logged, for a session that is not ours.
async fn session_order(
    connection: &mut PgConnection,
    session: &Value,
) -> Result<Option<Order>, PaymentError> {
    let order_no = text(session, &["metadata", "order_no"])
        .or_else(|| text(session, &["client_reference_id"]));
    let refers = OrderRef {
        order_no,
        subscription_id: None,
        payment_intent_id: None,
    };
    locked_order(connection, "checkout session", session, refers).await
}

async fn checkout_paid(
    connection: &mut PgConnection,
    event: &StripeEvent,
    session: &Value,
    now: DateTime<Utc>,
) -> Result<(), PaymentError> {
    let Some(order) = session_order(connection, session).await? else {
        return Ok(());
    };
    let customer = id_of(session, "customer");
    let subscription = id_of(session, "subscription");
    let payment_intent = id_of(session, "payment_intent");
    order::record_stripe_ids(connection, order.id, customer, subscription, payment_intent).await?;
    let payment_status = text(session, &["payment_status"]).unwrap_or("unpaid");
    if !matches!(payment_status, "paid" | "no_payment_required") {
        // Delayed methods confirm later with async_payment_succeeded or _failed.
        return Ok(());
    }
    let paid = Paid {
        subtotal: number(session, &["amount_subtotal"]),
        discount: number(session, &["total_details", "amount_discount"]).unwrap_or(0),
        total: number(session, &["amount_total"]),
        currency: text(session, &["currency"]),
    };
    let Some((amount_paid, discount)) = paid.agreed(&order, "the checkout session") else {
        return Ok(());
    };
    settle_payment(connection, &order, event.created_at(), now).await?;
    order::record_amount_paid(connection, order.id, amount_paid, discount).await?;
    if order.is_subscription() {
        // Its invoice is recorded by `invoice.paid`.
        order::activate_subscription(connection, order.id, event.created_at(), None).await?;
    } else if let Some(payment_intent) = payment_intent {
        let payment = NewInvoice {
            order: &order,
            stripe_invoice_id: None,
            stripe_payment_intent_id: Some(payment_intent),
            number: None,
            amount_paid_cents: amount_paid,
            currency: &order.currency,
            period_start: None,
            period_end: None,
            hosted_invoice_url: None,
            pdf_url: None,
            credits_granted: order.credits,
            created_at: event.created_at(),
        };
        if invoice::record(connection, payment).await? {
            send_receipt(connection, &order, amount_paid, None).await?;
        }
    }
    Ok(())
}

async fn checkout_closed(
    connection: &mut PgConnection,
    session: &Value,
    status: OrderStatus,
) -> Result<(), PaymentError> {
    let Some(order) = session_order(connection, session).await? else {
        return Ok(());
    };
    // Only the session the order currently shows can close it: an older session expiring
    // after `/checkout` made a new one changes nothing.
    let session_id = text(session, &["id"]);
    if order.checkout_session_id.is_some() && order.checkout_session_id.as_deref() != session_id {
        return Ok(());
    }
    order::close_pending(connection, order.id, status).await?;
    Ok(())
}

async fn subscription_changed(
    connection: &mut PgConnection,
    event: &StripeEvent,
    subscription: &Value,
) -> Result<(), PaymentError> {
    let order_no = text(subscription, &["metadata", "order_no"]);
    let subscription_id = text(subscription, &["id"]);
    let refers = OrderRef {
        order_no,
        subscription_id,
        payment_intent_id: None,
    };
    let Some(order) = locked_order(connection, "subscription", subscription, refers).await? else {
        return Ok(());
    };
    let deleted = event.event_type == "customer.subscription.deleted";
    let stated = text(subscription, &["status"]).unwrap_or("active");
    let status = if deleted {
        SubscriptionStatus::Canceled
    } else if let Some(status) = SubscriptionStatus::parse(stated) {
        status
    } else {
        tracing::error!(order_no = %order.order_no, event_id = %event.id, status = stated,
            "a subscription status this service does not know: ignored");
        return Ok(());
    };
    // The period end sits on the items in the current API and on the subscription before.
    let period_end = subscription
        .get("items")
        .and_then(|items| items.get("data"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|item| number(item, &["current_period_end"]))
        .max()
        .or_else(|| number(subscription, &["current_period_end"]))
        .and_then(timestamp);
    let cancel_at_period_end = boolean(subscription, &["cancel_at_period_end"]).unwrap_or(false);
    // An older event never undoes a newer state, and nothing revives a cancelled subscription.
    let change = SubscriptionChange {
        status,
        cancel_at_period_end,
        period_end,
        at: event.created_at(),
        subscription_id,
        deleted,
    };
    if !order::apply_subscription_change(connection, order.id, change).await? {
        tracing::info!(order_no = %order.order_no, event_id = %event.id,
            "an older subscription event was ignored");
        return Ok(());
    }
    // Stripe confirmed an upgrade (the subscription names the plan asked for): its limits
    // apply now, and its proration invoice grants the difference in credits.
    let confirmed = text(subscription, &["metadata", "plan_id"])
        .and_then(|plan_id| plan_id.parse::<i64>().ok());
    if order.pending_change == Some(PlanChange::Upgrade)
        && confirmed.is_some()
        && confirmed == order.pending_plan_id
        && let Some(new_plan) = plans::find(&mut *connection, confirmed.unwrap_or_default()).await?
    {
        let old_plan = plans::find(&mut *connection, order.plan_id).await?;
        let (old_credits, old_amount) =
            old_plan.map_or((0, 0), |old| (old.credits, old.amount_cents));
        order::apply_pending_change(
            connection,
            order.id,
            &new_plan,
            (new_plan.credits - old_credits).max(0),
            (new_plan.amount_cents - old_amount).max(0),
        )
        .await?;
    }
    let newly_ending = cancel_at_period_end && !order.cancel_at_period_end;
    if newly_ending && status != SubscriptionStatus::Canceled {
        let ends_on = period_end.or(order.current_period_end).map_or_else(
            || String::from("-"),
            |end| end.format("%Y-%m-%d").to_string(),
        );
        let ending = Email::SubscriptionEnding {
            order_no: order.order_no.clone(),
            ends_on,
        };
        notify(connection, &order, ending).await?;
    }
    Ok(())
}
