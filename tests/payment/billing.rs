//! The billing lifecycle (issue 12): one subscription at a time, checkout at the price still on
//! sale, one Stripe customer per user, the portal, invoices and receipts, refunds of
//! subscription invoices, and disputes.

use reqwest::Method;
use serde_json::{Value, json};

use super::support::scene::Scene;
use super::support::stripe::fixture;
use super::support::{assert_ledger_consistent, send};
use super::{
    active_subscription, completed_session, event, event_at, invoice, shop, subscription_object,
};

impl Scene {
    async fn invoices(&self) -> Vec<Value> {
        let list = self.user().call(Method::GET, "/myapi/invoices", None).await;
        list.assert_ok()["items"].as_array().unwrap().clone()
    }

    /// Pays a one-time order (1000 credits for 990 cents) and returns its number.
    async fn paid_one_time_order(&self) -> String {
        let plan_id = self.one_time_plan().await;
        let order_no = self.pending_order(plan_id).await;
        let session_id = self.session_id(&order_no).await;
        let paid = completed_session(&order_no, &session_id, 990, "paid");
        self.deliver(&event("checkout.session.completed", paid))
            .await
            .assert_ok();
        order_no
    }

    async fn invoices_as_admin(&self) -> Vec<Value> {
        let list = self
            .admin()
            .call(Method::GET, "/myapi/admin/invoices", None)
            .await;
        list.assert_ok()["items"].as_array().unwrap().clone()
    }

    async fn frozen_reason(&self) -> Value {
        let list = self
            .admin()
            .call(Method::GET, "/myapi/admin/users?email=caller", None)
            .await;
        let rows = list.assert_ok()["items"].as_array().unwrap().clone();
        let me = rows
            .iter()
            .find(|row| row["id"] == json!(self.user().id))
            .expect("the user is listed");
        me["frozen_reason"].clone()
    }
}

fn charge(payment_intent: &str, amount: i64, refunded: i64) -> Value {
    let mut charge = fixture("charge");
    charge["id"] = json!(format!("ch_{payment_intent}"));
    charge["amount"] = json!(amount);
    charge["amount_refunded"] = json!(refunded);
    charge["refunded"] = json!(refunded >= amount);
    charge["currency"] = json!("usd");
    charge["payment_intent"] = json!(payment_intent);
    charge["metadata"] = json!({});
    charge
}

fn dispute(id: &str, payment_intent: &str, status: &str) -> Value {
    let mut dispute = fixture("dispute");
    dispute["id"] = json!(id);
    dispute["charge"] = json!(format!("ch_{payment_intent}"));
    dispute["payment_intent"] = json!(payment_intent);
    dispute["status"] = json!(status);
    dispute
}

fn invoice_payment(invoice_id: &str, payment_intent: &str) -> Value {
    let mut payment = fixture("invoice_payment");
    payment["invoice"] = json!(invoice_id);
    payment["payment"] = json!({"type": "payment_intent", "payment_intent": payment_intent});
    payment
}

#[tokio::test]
async fn a_second_subscription_is_refused_while_one_is_live() {
    let shop = shop().await;
    let (order_no, subscription) = active_subscription(&shop).await;
    let plan_id = shop.subscription_plan().await;
    let refused = shop.order(plan_id, "credit_card").await;
    refused.assert_error(400, Some(40029));
    assert!(
        refused.json["msg"]
            .as_str()
            .unwrap()
            .contains("subscription")
    );
    // A pack of credits is still for sale.
    let one_time = shop.one_time_plan().await;
    shop.order(one_time, "credit_card").await.assert_ok();

    let now = chrono::Utc::now().timestamp();
    let failed = invoice(
        "in_failed",
        &subscription,
        &order_no,
        "subscription_cycle",
        now,
    );
    shop.deliver(&event_at("invoice.payment_failed", failed, now + 10))
        .await
        .assert_ok();
    shop.order(plan_id, "credit_card")
        .await
        .assert_error(400, Some(40029));

    let ended = subscription_object(&subscription, &order_no, "canceled", false);
    shop.deliver(&event_at("customer.subscription.deleted", ended, now + 20))
        .await
        .assert_ok();
    shop.order(plan_id, "credit_card").await.assert_ok();
}

#[tokio::test]
async fn checkout_reopens_an_order_only_at_the_price_still_on_sale_and_within_a_day() {
    let shop = shop().await;
    let plan_id = shop.one_time_plan().await;
    let reopen = |order_no: String| {
        let shop = &shop;
        async move {
            let path = format!("/myapi/orders/{order_no}/checkout");
            shop.user().call(Method::POST, &path, None).await
        }
    };
    // Unchanged: a fresh session.
    let fresh = shop.pending_order(plan_id).await;
    reopen(fresh.clone()).await.assert_ok();

    // Repriced: the order's snapshot price is no longer on sale.
    let repriced = shop.pending_order(plan_id).await;
    let update = json!({"name": "Pack 1000", "plan_type": "one_time", "amount_cents": 1290,
        "currency": "usd", "credits": 1000, "rps_limit": 5, "rph_limit": 1000});
    shop.admin()
        .call(
            Method::PUT,
            &format!("/myapi/admin/plans/{plan_id}"),
            Some(update),
        )
        .await
        .assert_ok();
    reopen(repriced.clone())
        .await
        .assert_error(400, Some(40021));
    assert_eq!(shop.get_order(&repriced).await["status"], "expired");
    let sessions = shop.stripe.requests_to("POST", "/v1/checkout/sessions");

    // Older than a day.
    let old = shop.pending_order(plan_id).await;
    sqlx::query("UPDATE orders SET created_at = now() - interval '25 hours' WHERE order_no = $1")
        .bind(&old)
        .execute(&shop.app.pool)
        .await
        .unwrap();
    reopen(old.clone()).await.assert_error(400, Some(40021));
    assert_eq!(shop.get_order(&old).await["status"], "expired");

    // Deactivated.
    let orphan = shop.pending_order(plan_id).await;
    shop.admin()
        .call(
            Method::DELETE,
            &format!("/myapi/admin/plans/{plan_id}"),
            None,
        )
        .await
        .assert_ok();
    reopen(orphan.clone()).await.assert_error(400, Some(40021));
    // The refused re-openings asked Stripe for nothing (the two new orders made one each).
    let after = shop.stripe.requests_to("POST", "/v1/checkout/sessions");
    assert_eq!(after.len(), sessions.len() + 2);
}

#[tokio::test]
async fn one_stripe_customer_per_user_is_passed_to_every_checkout_and_kept_current() {
    let shop = shop().await;
    let plan_id = shop.one_time_plan().await;
    shop.pending_order(plan_id).await;
    shop.pending_order(plan_id).await;
    let created = shop.stripe.requests_to("POST", "/v1/customers");
    assert_eq!(created.len(), 1, "one customer for two checkouts");
    let email: String = sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
        .bind(shop.user().id)
        .fetch_one(&shop.app.pool)
        .await
        .unwrap();
    assert_eq!(created[0].form["email"], email);
    assert_eq!(
        created[0].form["metadata[user_id]"],
        shop.user().id.to_string()
    );
    let sessions = shop.stripe.requests_to("POST", "/v1/checkout/sessions");
    assert_eq!(sessions.len(), 2);
    for session in &sessions {
        assert_eq!(session.form["customer"], "cus_fake_1");
    }

    // A changed address reaches Stripe before the next checkout.
    sqlx::query("UPDATE users SET email = 'renamed.user@example.com' WHERE id = $1")
        .bind(shop.user().id)
        .execute(&shop.app.pool)
        .await
        .unwrap();
    shop.pending_order(plan_id).await;
    let updates = shop.stripe.requests_to("POST", "/v1/customers/cus_fake_1");
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].form["email"], "renamed.user@example.com");
    let creations = shop.stripe.requests_to("POST", "/v1/customers");
    let creations = creations.iter().filter(|r| r.path == "/v1/customers");
    assert_eq!(creations.count(), 1, "still the one customer");
}

#[tokio::test]
async fn the_billing_portal_is_the_customers_and_returns_to_the_billing_page() {
    let shop = shop().await;
    let portal = shop
        .user()
        .call(Method::POST, "/myapi/billing/portal", None)
        .await;
    let url = portal.assert_ok()["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with("https://billing.stripe.com/"), "{url}");
    let asked = shop
        .stripe
        .requests_to("POST", "/v1/billing_portal/sessions");
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].form["customer"], "cus_fake_1");
    assert!(asked[0].form["return_url"].ends_with("/billing"));
    // Anonymous callers get nothing.
    let anonymous = send(shop.app.request(Method::POST, "/myapi/billing/portal")).await;
    assert_eq!(anonymous.status, 401);
}

#[tokio::test]
async fn invoices_list_each_paid_period_and_one_time_payment_with_their_documents() {
    let shop = shop().await;
    let (order_no, subscription) = active_subscription(&shop).await;
    let now = chrono::Utc::now().timestamp();
    let mut first = invoice(
        "in_first",
        &subscription,
        &order_no,
        "subscription_create",
        now,
    );
    first["number"] = json!("INV-0001");
    first["hosted_invoice_url"] = json!("https://invoice.stripe.com/i/in_first");
    first["invoice_pdf"] = json!("https://pay.stripe.com/invoice/in_first/pdf");
    let paid = event("invoice.paid", first);
    shop.deliver(&paid).await.assert_ok();
    shop.deliver(&paid).await.assert_ok();
    let one_time = shop.paid_one_time_order().await;
    let mut receipt = charge(&format!("pi_{}", &one_time[4..]), 990, 0);
    receipt["receipt_url"] = json!("https://pay.stripe.com/receipts/r_1");
    receipt["receipt_number"] = json!("1234-5678");
    shop.deliver(&event("charge.succeeded", receipt))
        .await
        .assert_ok();

    let invoices = shop.invoices().await;
    assert_eq!(invoices.len(), 2, "{invoices:?}");
    let payment = &invoices[0];
    assert_eq!(payment["order_no"], one_time.as_str());
    assert_eq!(payment["status"], "paid");
    assert_eq!(payment["amount_paid_cents"], 990);
    assert_eq!(payment["currency"], "usd");
    assert_eq!(payment["pdf_url"], "https://pay.stripe.com/receipts/r_1");
    assert_eq!(payment["number"], "1234-5678");
    let period = &invoices[1];
    assert_eq!(period["order_no"], order_no.as_str());
    assert_eq!(period["number"], "INV-0001");
    assert_eq!(period["amount_paid_cents"], 2900);
    assert_eq!(
        period["hosted_invoice_url"],
        "https://invoice.stripe.com/i/in_first"
    );
    assert_eq!(
        period["pdf_url"],
        "https://pay.stripe.com/invoice/in_first/pdf"
    );
    let end = chrono::DateTime::parse_from_rfc3339(period["period_end"].as_str().unwrap());
    assert_eq!(end.unwrap().timestamp(), now);
    assert!(period.get("user_id").is_none());

    let all = shop
        .admin()
        .call(Method::GET, "/myapi/admin/invoices", None)
        .await;
    let all = all.assert_ok();
    assert_eq!(all["total"], 2);
    assert_eq!(all["items"][0]["user_id"], json!(shop.user().id));
    let other = shop.app.user("other.payer@example.com", "user").await;
    let theirs = other.call(Method::GET, "/myapi/invoices", None).await;
    assert_eq!(theirs.assert_ok()["total"], 0);
    let not_admin = shop
        .user()
        .call(Method::GET, "/myapi/admin/invoices", None)
        .await;
    assert_eq!(not_admin.status, 403);
}

#[tokio::test]
async fn a_refunded_subscription_invoice_takes_its_credits_back_and_ends_the_plans_limits() {
    let shop = shop().await;
    let (order_no, subscription) = active_subscription(&shop).await;
    let now = chrono::Utc::now().timestamp();
    // The payment intent arrives before its invoice here; either order works.
    shop.deliver(&event(
        "invoice_payment.paid",
        invoice_payment("in_first", "pi_sub_1"),
    ))
    .await
    .assert_ok();
    let first = invoice(
        "in_first",
        &subscription,
        &order_no,
        "subscription_create",
        now,
    );
    shop.deliver(&event("invoice.paid", first))
        .await
        .assert_ok();
    let renewal = invoice(
        "in_second",
        &subscription,
        &order_no,
        "subscription_cycle",
        now + 60,
    );
    shop.deliver(&event("invoice.paid", renewal))
        .await
        .assert_ok();
    shop.deliver(&event(
        "invoice_payment.paid",
        invoice_payment("in_second", "pi_sub_2"),
    ))
    .await
    .assert_ok();
    assert_eq!(shop.status_credits().await, 10_000);

    // Half of the renewal back: half of its period's credits.
    shop.deliver(&event("charge.refunded", charge("pi_sub_2", 2900, 1450)))
        .await
        .assert_ok();
    assert_eq!(shop.status_credits().await, 7_500);
    let status = shop.user().call(Method::GET, "/myapi/status", None).await;
    assert_eq!(status.assert_ok()["plan"]["name"], "Pro");
    // All of it: the rest, and the subscription no longer sets the limits.
    let full = event("charge.refunded", charge("pi_sub_2", 2900, 2900));
    shop.deliver(&full).await.assert_ok();
    shop.deliver(&full).await.assert_ok();
    assert_eq!(shop.status_credits().await, 5_000);
    let status = shop.user().call(Method::GET, "/myapi/status", None).await;
    assert_eq!(status.assert_ok()["plan"]["plan_type"], "free");
    let invoices = shop.invoices().await;
    assert_eq!(invoices[0]["status"], "refunded");
    assert_eq!(invoices[1]["status"], "paid");
    assert_ledger_consistent(&shop.app.pool).await;
}

#[tokio::test]
async fn a_dispute_takes_the_grant_back_and_freezes_until_it_is_won() {
    let shop = shop().await;
    let order_no = shop.paid_one_time_order().await;
    let payment_intent = format!("pi_{}", &order_no[4..]);
    let path = format!("/myapi/admin/users/{}/credits", shop.user().id);
    let spend = json!({"amount": -400, "reason": "spent on calls"});
    shop.admin()
        .call(Method::POST, &path, Some(spend))
        .await
        .assert_ok();
    assert_eq!(shop.status_credits().await, 600);

    let opened = dispute("dp_1", &payment_intent, "needs_response");
    shop.deliver(&event("charge.dispute.created", opened.clone()))
        .await
        .assert_ok();
    // A redelivery under another event id takes nothing more.
    shop.deliver(&event("charge.dispute.created", opened))
        .await
        .assert_ok();
    assert_eq!(shop.balance().await, 0);
    let reference: String = sqlx::query_scalar(
        "SELECT reference FROM ledger_entries WHERE reason = 'dispute' AND user_id = $1",
    )
    .bind(shop.user().id)
    .fetch_one(&shop.app.pool)
    .await
    .unwrap();
    assert!(reference.contains("400 credits short"), "{reference}");
    assert!(reference.contains(&order_no), "{reference}");
    assert_eq!(shop.frozen_reason().await, "dispute");
    let frozen = shop.user().call(Method::GET, "/myapi/status", None).await;
    assert_eq!(frozen.status, 403, "{:?}", frozen.json);
    assert_eq!(shop.invoices_as_admin().await[0]["status"], "disputed");

    let won = dispute("dp_1", &payment_intent, "won");
    shop.deliver(&event("charge.dispute.closed", won.clone()))
        .await
        .assert_ok();
    shop.deliver(&event("charge.dispute.closed", won))
        .await
        .assert_ok();
    assert_eq!(shop.status_credits().await, 600);
    assert_eq!(shop.frozen_reason().await, Value::Null);
    assert_eq!(shop.invoices().await[0]["status"], "paid");
    assert_ledger_consistent(&shop.app.pool).await;
}

#[tokio::test]
async fn a_lost_dispute_keeps_the_account_frozen_and_an_admins_freeze_is_the_admins() {
    let shop = shop().await;
    let order_no = shop.paid_one_time_order().await;
    let payment_intent = format!("pi_{}", &order_no[4..]);
    shop.deliver(&event(
        "charge.dispute.created",
        dispute("dp_2", &payment_intent, "needs_response"),
    ))
    .await
    .assert_ok();
    shop.deliver(&event(
        "charge.dispute.closed",
        dispute("dp_2", &payment_intent, "lost"),
    ))
    .await
    .assert_ok();
    assert_eq!(shop.frozen_reason().await, "dispute");
    assert_eq!(shop.balance().await, 0);

    // An admin unfreezes; a later admin freeze is not lifted by a dispute won.
    let user_id = shop.user().id;
    let unfreeze = format!("/myapi/admin/users/{user_id}/unfreeze");
    shop.admin()
        .call(Method::POST, &unfreeze, None)
        .await
        .assert_ok();
    assert_eq!(shop.frozen_reason().await, Value::Null);
    let second = shop.paid_one_time_order().await;
    let second_intent = format!("pi_{}", &second[4..]);
    shop.deliver(&event(
        "charge.dispute.created",
        dispute("dp_3", &second_intent, "needs_response"),
    ))
    .await
    .assert_ok();
    let freeze = format!("/myapi/admin/users/{user_id}/freeze");
    shop.admin()
        .call(Method::POST, &freeze, None)
        .await
        .assert_ok();
    assert_eq!(shop.frozen_reason().await, "admin");
    shop.deliver(&event(
        "charge.dispute.closed",
        dispute("dp_3", &second_intent, "won"),
    ))
    .await
    .assert_ok();
    assert_eq!(shop.frozen_reason().await, "admin");
    assert_ledger_consistent(&shop.app.pool).await;
}

#[tokio::test]
async fn a_promotion_codes_discount_is_recorded_and_the_plan_granted_in_full() {
    let shop = shop().await;
    let plain = shop.one_time_plan().await;
    shop.pending_order(plain).await;
    let promoted = shop
        .create_plan(
            json!({"name": "Promo pack", "plan_type": "one_time", "amount_cents": 990,
            "currency": "usd", "credits": 1000, "rps_limit": 5, "rph_limit": 1000,
            "allow_promotion_codes": true}),
        )
        .await;
    let order_no = shop.pending_order(promoted).await;
    let sessions = shop.stripe.requests_to("POST", "/v1/checkout/sessions");
    assert!(!sessions[0].form.contains_key("allow_promotion_codes"));
    assert_eq!(sessions[1].form["allow_promotion_codes"], "true");

    let session_id = shop.session_id(&order_no).await;
    let discounted = |total: i64| {
        let mut paid = completed_session(&order_no, &session_id, total, "paid");
        paid["amount_subtotal"] = json!(990);
        paid["total_details"] = json!({"amount_discount": 200, "amount_shipping": 0,
            "amount_tax": 0});
        paid
    };
    // A total that is neither the price nor the price less its discount grants nothing.
    shop.deliver(&event("checkout.session.completed", discounted(700)))
        .await
        .assert_ok();
    assert_eq!(shop.status_credits().await, 0);
    shop.deliver(&event("checkout.session.completed", discounted(790)))
        .await
        .assert_ok();
    assert_eq!(shop.status_credits().await, 1000);
    let order = shop.get_order(&order_no).await;
    assert_eq!(order["amount_cents"], 990);
    assert_eq!(order["amount_paid_cents"], 790);
    assert_eq!(order["discount_cents"], 200);
    assert_eq!(shop.invoices().await[0]["amount_paid_cents"], 790);
}

#[tokio::test]
async fn a_plan_change_upgrades_now_with_proration_and_downgrades_at_renewal() {
    let shop = shop().await;
    let (order_no, subscription) = active_subscription(&shop).await;
    let pro = shop.get_order(&order_no).await["plan_id"].as_i64().unwrap();
    let business = shop
        .create_plan(json!({"name": "Business", "plan_type": "subscription",
            "amount_cents": 9900, "currency": "usd", "interval": "month", "credits": 20000,
            "rps_limit": 50, "rph_limit": 100000}))
        .await;
    let change = |plan_id: i64| {
        let shop = &shop;
        async move {
            shop.user()
                .call(
                    Method::POST,
                    "/myapi/subscription/change",
                    Some(json!({ "plan_id": plan_id })),
                )
                .await
        }
    };
    change(pro).await.assert_error(400, Some(40007));
    let one_time = shop.one_time_plan().await;
    change(one_time).await.assert_error(400, Some(40007));

    // Upgrade: Stripe prorates and invoices now; nothing changes before its webhooks.
    let asked = change(business).await;
    assert_eq!(
        asked.assert_ok()["subscription"]["pending_plan_id"],
        business
    );
    let update = shop
        .stripe
        .requests_to("POST", &format!("/v1/subscriptions/{subscription}"));
    let update = update.last().unwrap();
    assert_eq!(update.form["proration_behavior"], "always_invoice");
    assert_eq!(update.form["items[0][id]"], "si_QXhVnC2h0Jczwc");
    assert_eq!(update.form["items[0][price_data][unit_amount]"], "9900");
    assert_eq!(
        update.form["items[0][price_data][product]"],
        "prod_QXg1hqf4jFNsqG"
    );
    assert_eq!(update.form["metadata[plan_id]"], business.to_string());
    let status = shop.user().call(Method::GET, "/myapi/status", None).await;
    assert_eq!(status.assert_ok()["plan"]["name"], "Pro");

    let now = chrono::Utc::now().timestamp();
    let mut updated = subscription_object(&subscription, &order_no, "active", false);
    updated["metadata"]["plan_id"] = json!(business.to_string());
    shop.deliver(&event_at(
        "customer.subscription.updated",
        updated,
        now + 10,
    ))
    .await
    .assert_ok();
    let status = shop.user().call(Method::GET, "/myapi/status", None).await;
    assert_eq!(status.assert_ok()["plan"]["name"], "Business");
    // Half the period was left: half the difference in price, half the difference in credits.
    let mut proration = invoice(
        "in_upgrade",
        &subscription,
        &order_no,
        "subscription_update",
        now,
    );
    proration["amount_paid"] = json!(3500);
    let proration = event("invoice.paid", proration);
    shop.deliver(&proration).await.assert_ok();
    shop.deliver(&proration).await.assert_ok();
    assert_eq!(shop.status_credits().await, 5000 + 7500);

    // Downgrade back: the limits stay until the renewal at the new price.
    change(pro).await.assert_ok();
    let update = shop
        .stripe
        .requests_to("POST", &format!("/v1/subscriptions/{subscription}"));
    assert_eq!(update.last().unwrap().form["proration_behavior"], "none");
    let status = shop.user().call(Method::GET, "/myapi/status", None).await;
    assert_eq!(status.assert_ok()["plan"]["name"], "Business");
    let renewal = invoice(
        "in_renewal",
        &subscription,
        &order_no,
        "subscription_cycle",
        now + 2_592_000,
    );
    shop.deliver(&event("invoice.paid", renewal))
        .await
        .assert_ok();
    let status = shop.user().call(Method::GET, "/myapi/status", None).await;
    assert_eq!(status.assert_ok()["plan"]["name"], "Pro");
    assert_eq!(shop.status_credits().await, 5000 + 7500 + 5000);
    let order = shop.get_order(&order_no).await;
    assert_eq!(order["plan_id"], pro);
    assert!(order["subscription"].get("pending_plan_id").is_none());
    assert_ledger_consistent(&shop.app.pool).await;
}

#[tokio::test]
async fn a_plan_change_needs_a_live_stripe_subscription() {
    let shop = shop().await;
    let plan_id = shop.subscription_plan().await;
    let body = json!({ "plan_id": plan_id });
    let none = shop
        .user()
        .call(
            Method::POST,
            "/myapi/subscription/change",
            Some(body.clone()),
        )
        .await;
    none.assert_error(400, Some(40031));
    let manual = json!({"user_id": shop.user().id, "plan_id": plan_id});
    shop.admin()
        .call(Method::POST, "/myapi/admin/orders", Some(manual))
        .await
        .assert_ok();
    let other = shop
        .create_plan(
            json!({"name": "Other", "plan_type": "subscription", "amount_cents": 100,
            "currency": "usd", "interval": "month", "credits": 1, "rps_limit": 1,
            "rph_limit": 1}),
        )
        .await;
    let manual_change = shop
        .user()
        .call(
            Method::POST,
            "/myapi/subscription/change",
            Some(json!({ "plan_id": other })),
        )
        .await;
    manual_change.assert_error(400, Some(40027));
}

#[tokio::test]
async fn one_subscription_checkout_is_open_at_a_time() {
    let shop = shop().await;
    let plan_id = shop.subscription_plan().await;
    let first = shop.pending_order(plan_id).await;
    let first_session = shop.session_id(&first).await;
    let one_time = shop.one_time_plan().await;
    let pack = shop.pending_order(one_time).await;
    // A second subscription order replaces the first: its session expires at Stripe.
    let second = shop.pending_order(plan_id).await;
    assert_eq!(shop.get_order(&first).await["status"], "expired");
    let expired = shop.stripe.requests_to(
        "POST",
        &format!("/v1/checkout/sessions/{first_session}/expire"),
    );
    assert_eq!(expired.len(), 1);
    assert_eq!(shop.get_order(&second).await["status"], "pending");
    // A pack of credits is not a subscription: it stays open.
    assert_eq!(shop.get_order(&pack).await["status"], "pending");
    // Re-opening the first is refused: it expired.
    let path = format!("/myapi/orders/{first}/checkout");
    shop.user()
        .call(Method::POST, &path, None)
        .await
        .assert_error(400, Some(40021));
}

#[tokio::test]
async fn an_admin_lists_every_users_orders_or_one_users_and_others_may_not() {
    let shop = shop().await;
    let paid = shop.paid_one_time_order().await;
    let plan_id = shop.one_time_plan().await;
    let pending = shop.pending_order(plan_id).await;
    let other = shop.app.user("other@example.com", "user").await;
    let others = other
        .post("/myapi/orders", json!({"plan_id": plan_id}))
        .await
        .assert_ok()["order_no"]
        .as_str()
        .unwrap()
        .to_owned();

    let admin = shop.admin();
    let list = admin.get("/myapi/admin/orders").await;
    let data = list.assert_ok();
    assert_eq!(data["total"], 3);
    let numbers: Vec<&str> = data["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|order| order["order_no"].as_str().unwrap())
        .collect();
    assert_eq!(numbers, [others.as_str(), pending.as_str(), paid.as_str()]);
    assert_eq!(data["items"][0]["user_id"], other.id.to_string());
    assert_eq!(data["items"][2]["status"], "paid");
    assert_eq!(data["items"][2]["amount_cents"], 990);

    let path = format!(
        "/myapi/admin/orders?user_id={}&status=pending",
        shop.user().id
    );
    let mine = admin.get(&path).await;
    let data = mine.assert_ok();
    assert_eq!(data["total"], 1);
    assert_eq!(data["items"][0]["order_no"], pending.as_str());
    assert_eq!(data["items"][0]["user_id"], shop.user().id.to_string());

    admin
        .get("/myapi/admin/orders?status=lost")
        .await
        .assert_error(400, None);
    admin
        .get("/myapi/admin/orders?user_id=someone")
        .await
        .assert_error(400, None);
    shop.user()
        .get("/myapi/admin/orders")
        .await
        .assert_error(403, None);
}
