//! The effect of each Stripe event type on orders, subscriptions and credits. Every function
//! runs inside the transaction that records the event, holding the order's row lock.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;

use super::error::PaymentError;
use super::event::StripeEvent;
use super::fields::{boolean, id_of, number, text, timestamp};
use super::grant::{grant_credits, settle_payment};
use super::invoice::{self, NewInvoice};
use super::order::{self, Order, OrderStatus, PlanChange, SubscriptionChange, SubscriptionStatus};
use super::reversal;
use crate::api::Lang;
use crate::auth::users;
use crate::ledger::{self, Movement};
use crate::mail::{Email, outbox};
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
        "invoice.paid" => invoice_paid(connection, event, object, now).await,
        "invoice.payment_failed" => {
            invoice_failed(connection, event, object, effects.grace_days).await
        }
        "customer.subscription.updated" | "customer.subscription.deleted" => {
            subscription_changed(connection, event, object).await
        }
        "charge.refunded" => reversal::charge_refunded(connection, object, now).await,
        "charge.dispute.created" => reversal::dispute_opened(connection, object, now).await,
        "charge.dispute.closed" => reversal::dispute_closed(connection, object, now).await,
        "charge.succeeded" => charge_succeeded(connection, object).await,
        "invoice_payment.paid" => invoice_payment_paid(connection, object).await,
        other => {
            tracing::debug!(event_type = other, "Stripe event type needs nothing");
            Ok(())
        }
    }
}

/// What Stripe says was paid: the price before discounts, the discount, and the amount charged.
struct Paid<'a> {
    subtotal: Option<i64>,
    discount: i64,
    total: Option<i64>,
    currency: Option<&'a str>,
}

impl Paid<'_> {
    /// The amount charged and the discount, when they agree with the order: its currency, and
    /// its price either charged in full or, before a promotion code's discount, as the subtotal.
    /// Otherwise nothing is granted.
    fn agreed(&self, order: &Order, what: &str) -> Option<(i64, i64)> {
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
struct OrderRef<'a> {
    order_no: Option<&'a str>,
    subscription_id: Option<&'a str>,
    payment_intent_id: Option<&'a str>,
}

/// The order a Stripe object of `kind` refers to, locked; None, logged, for an object that is
/// not ours.
async fn locked_order(
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

/// Emails the order's owner, in their language, once the transaction commits.
async fn notify(
    connection: &mut PgConnection,
    order: &Order,
    email: Email,
) -> Result<(), PaymentError> {
    if let Some((address, lang)) = users::contact(connection, order.user_id).await? {
        let lang = Lang::parse(&lang).unwrap_or_default();
        outbox::enqueue(connection, &address, lang, &email).await?;
    }
    Ok(())
}

async fn send_receipt(
    connection: &mut PgConnection,
    order: &Order,
    amount_paid: i64,
    document_url: Option<&str>,
) -> Result<(), PaymentError> {
    let receipt = Email::PaymentReceipt {
        order_no: order.order_no.clone(),
        amount: format!(
            "{}.{:02} {}",
            amount_paid / 100,
            amount_paid % 100,
            order.currency.to_uppercase()
        ),
        credits: order.credits,
        document_url: document_url.map(str::to_owned),
    };
    notify(connection, order, receipt).await
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

async fn invoice_paid(
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
async fn invoice_payment_paid(
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
async fn charge_succeeded(
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
async fn invoice_failed(
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
