//! Plans, orders, Stripe webhooks, cancellation, the credit ledger and the account status, over
//! HTTP against a fake Stripe that answers with Stripe's own fixture objects.

mod support;

#[path = "payment/account.rs"]
mod account;
#[path = "payment/billing.rs"]
mod billing;
#[path = "payment/notices.rs"]
mod notices;
#[path = "payment/redemption.rs"]
mod redemption;

use chrono::Duration;
use reqwest::Method;
use serde_json::{Value, json};
use support::scene::Scene;
use support::stripe::{completed_session, event, event_at, fixture};
use support::{TestResponse, assert_ledger_consistent, send};
use uuid::Uuid;

async fn shop() -> Scene {
    Scene::start().await
}

/// A shop whose Stripe keys are unset.
async fn shop_without_stripe() -> Scene {
    Scene::builder().without_stripe().start().await
}

impl Scene {
    async fn create_plan(&self, plan: Value) -> i64 {
        let response = self
            .admin()
            .call(Method::POST, "/myapi/admin/plans", Some(plan))
            .await;
        response.assert_ok()["id"].as_i64().unwrap()
    }

    async fn one_time_plan(&self) -> i64 {
        self.create_plan(
            json!({"name": "Pack 1000", "plan_type": "one_time", "amount_cents": 990,
            "currency": "usd", "credits": 1000, "rps_limit": 5, "rph_limit": 1000}),
        )
        .await
    }

    async fn subscription_plan(&self) -> i64 {
        self.create_plan(
            json!({"name": "Pro", "plan_type": "subscription", "amount_cents": 2900,
            "currency": "usd", "interval": "month", "credits": 5000, "monthly_quota": 100000,
            "rps_limit": 20, "rph_limit": 50000}),
        )
        .await
    }

    async fn order(&self, plan_id: i64, method: &str) -> TestResponse {
        let body = json!({"plan_id": plan_id, "payment_method": method});
        self.user()
            .call(Method::POST, "/myapi/orders", Some(body))
            .await
    }

    /// Creates an order and returns its number.
    async fn pending_order(&self, plan_id: i64) -> String {
        let response = self.order(plan_id, "credit_card").await;
        response.assert_ok()["order_no"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn get_order(&self, order_no: &str) -> Value {
        let path = format!("/myapi/orders/{order_no}");
        self.user()
            .call(Method::GET, &path, None)
            .await
            .assert_ok()
            .clone()
    }

    async fn status_credits(&self) -> i64 {
        let status = self.user().call(Method::GET, "/myapi/status", None).await;
        status.assert_ok()["credits"].as_i64().unwrap()
    }

    /// Ends a subscription the way a `customer.subscription.deleted` would.
    async fn end_subscription_in_database(&self, order_no: &str) {
        sqlx::query("UPDATE orders SET subscription_status = 'canceled' WHERE order_no = $1")
            .bind(order_no)
            .execute(&self.app.pool)
            .await
            .unwrap();
    }

    async fn cancel(&self, order_no: &str, body: Value) -> TestResponse {
        let path = format!("/myapi/orders/{order_no}/cancel");
        self.user().call(Method::POST, &path, Some(body)).await
    }
}

fn subscription_session(order_no: &str, session_id: &str, subscription: &str) -> Value {
    let mut session = completed_session(order_no, session_id, 2900, "paid");
    session["mode"] = json!("subscription");
    session["subscription"] = json!(subscription);
    session["customer"] = json!("cus_fake");
    session["payment_intent"] = Value::Null;
    session
}

fn invoice(id: &str, subscription: &str, order_no: &str, reason: &str, period_end: i64) -> Value {
    let mut invoice = fixture("invoice");
    invoice["id"] = json!(id);
    invoice["amount_paid"] = json!(2900);
    invoice["currency"] = json!("usd");
    invoice["billing_reason"] = json!(reason);
    invoice["parent"] = json!({"type": "subscription_details", "quote_details": null,
        "subscription_details": {"subscription": subscription, "metadata": {"order_no": order_no}}});
    invoice["lines"]["data"][0]["period"] =
        json!({"start": period_end - 2_592_000, "end": period_end});
    invoice
}

fn subscription_object(
    id: &str,
    order_no: &str,
    status: &str,
    cancel_at_period_end: bool,
) -> Value {
    let mut subscription = fixture("subscription");
    subscription["id"] = json!(id);
    subscription["status"] = json!(status);
    subscription["metadata"] = json!({"order_no": order_no});
    subscription["cancel_at_period_end"] = json!(cancel_at_period_end);
    // The fixture's period ended in 2000; a live subscription's ends in a month.
    subscription["items"]["data"][0]["current_period_end"] =
        json!(chrono::Utc::now().timestamp() + 2_592_000);
    subscription
}

#[tokio::test]
async fn the_plans_on_sale_and_the_free_plan_are_public() {
    let shop = shop().await;
    let plan_id = shop.one_time_plan().await;
    let hidden = shop.subscription_plan().await;
    let put = json!({"name": "Pro", "plan_type": "subscription", "amount_cents": 2900,
        "interval": "month", "credits": 5000, "rps_limit": 20, "rph_limit": 50000, "active": false});
    let path = format!("/myapi/admin/plans/{hidden}");
    shop.admin()
        .call(Method::PUT, &path, Some(put))
        .await
        .assert_ok();

    let response = shop.app.get("/myapi/plans").await;
    let items = response.assert_ok()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 2);
    let free = &items[0];
    assert_eq!(free["plan_type"], "free");
    assert_eq!(free["amount_cents"], 0);
    assert!(free["monthly_quota"].is_i64() && free["rps_limit"].is_i64());
    let pack = items.iter().find(|plan| plan["id"] == plan_id).unwrap();
    for field in [
        "name",
        "plan_type",
        "amount_cents",
        "currency",
        "interval",
        "credits",
        "monthly_quota",
        "rps_limit",
        "rph_limit",
        "description",
    ] {
        assert!(pack.get(field).is_some(), "{field} missing");
    }
    assert!(
        pack.get("stripe_price_id").is_none(),
        "admin fields stay private"
    );
    assert_eq!(pack["credits"], 1000);
    assert!(pack["interval"].is_null() && pack["monthly_quota"].is_null());
    assert_ledger_consistent(&shop.app.pool).await;
}

#[tokio::test]
async fn plan_administration_is_for_admins_and_validates_fields() {
    let shop = shop().await;
    let plan = json!({"name": "X", "plan_type": "one_time", "amount_cents": 100, "credits": 1,
        "rps_limit": 1, "rph_limit": 1});
    shop.user()
        .call(Method::POST, "/myapi/admin/plans", Some(plan.clone()))
        .await
        .assert_error(403, None);
    shop.app
        .post_json("/myapi/admin/plans", &plan)
        .await
        .assert_error(401, Some(40101));

    let no_interval = json!({"name": "S", "plan_type": "subscription", "amount_cents": 100,
        "rps_limit": 1, "rph_limit": 1});
    let response = shop
        .admin()
        .call(Method::POST, "/myapi/admin/plans", Some(no_interval))
        .await;
    response.assert_error(400, None);
    assert!(response.json["msg"].as_str().unwrap().contains("interval"));
    let negative = json!({"name": "N", "plan_type": "one_time", "amount_cents": -5, "rps_limit": 1, "rph_limit": 1});
    shop.admin()
        .call(Method::POST, "/myapi/admin/plans", Some(negative))
        .await
        .assert_error(400, None);
    let second_free = json!({"name": "Free 2", "plan_type": "free", "amount_cents": 0, "rps_limit": 1, "rph_limit": 1});
    shop.admin()
        .call(Method::POST, "/myapi/admin/plans", Some(second_free))
        .await
        .assert_error(400, None);

    let unused = shop.one_time_plan().await;
    let used = shop.one_time_plan().await;
    shop.pending_order(used).await;
    let deleted = shop
        .admin()
        .call(
            Method::DELETE,
            &format!("/myapi/admin/plans/{unused}"),
            None,
        )
        .await;
    assert_eq!(deleted.assert_ok()["deleted"], true);
    let kept = shop
        .admin()
        .call(Method::DELETE, &format!("/myapi/admin/plans/{used}"), None)
        .await;
    assert_eq!(kept.assert_ok()["deleted"], false);
    let active: bool = sqlx::query_scalar("SELECT active FROM plans WHERE id = $1")
        .bind(used)
        .fetch_one(&shop.app.pool)
        .await
        .unwrap();
    assert!(!active, "a plan with orders is deactivated");
    shop.admin()
        .call(
            Method::DELETE,
            &format!("/myapi/admin/plans/{unused}"),
            None,
        )
        .await
        .assert_error(404, None);
    let listed = shop
        .admin()
        .call(Method::GET, "/myapi/admin/plans", None)
        .await;
    assert_eq!(listed.assert_ok().as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn an_order_opens_a_stripe_checkout_session_for_its_plan() {
    let shop = shop().await;
    let plan_id = shop.one_time_plan().await;
    let response = shop.order(plan_id, "credit_card").await;
    let order = response.assert_ok();
    let order_no = order["order_no"].as_str().unwrap();
    assert!(order_no.starts_with("ord_") && order_no.len() > 20);
    assert_eq!(order["status"], "pending");
    assert_eq!(order["billing_mode"], "one_time");
    assert_eq!(order["provider"], "stripe");
    assert_eq!(order["amount_cents"], 990);
    assert_eq!(order["currency"], "usd");
    assert_eq!(
        order["checkout_url"],
        "https://checkout.stripe.com/c/pay/cs_test_fake_1"
    );
    assert!(order["subscription"].is_null());

    let sent = shop.stripe.requests_to("POST", "/v1/checkout/sessions");
    assert_eq!(sent.len(), 1);
    let form = &sent[0].form;
    assert_eq!(form["mode"], "payment");
    assert_eq!(form["client_reference_id"], order_no);
    assert_eq!(form["metadata[order_no]"], order_no);
    assert_eq!(form["payment_intent_data[metadata][order_no]"], order_no);
    assert_eq!(form["line_items[0][price_data][unit_amount]"], "990");
    assert_eq!(form["line_items[0][price_data][currency]"], "usd");
    assert_eq!(
        form["line_items[0][price_data][product_data][name]"],
        "Pack 1000"
    );
    assert_eq!(form["allowed_payment_method_types[0]"], "card");
    assert!(
        form["success_url"].starts_with("https://app.example.com/billing/success?order_no=ord_")
    );
    assert!(form["cancel_url"].starts_with("https://app.example.com/"));
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(order["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(
        form["expires_at"],
        expires_at.timestamp().to_string(),
        "the session expires with the order"
    );
    assert_eq!(
        sent[0].idempotency_key.as_deref(),
        Some(format!("checkout-{order_no}-1").as_str())
    );

    let alipay = shop.order(plan_id, "alipay").await;
    alipay.assert_ok();
    let wechat = shop.order(plan_id, "wechat_pay").await;
    wechat.assert_ok();
    let sent = shop.stripe.requests_to("POST", "/v1/checkout/sessions");
    assert_eq!(sent[1].form["allowed_payment_method_types[0]"], "alipay");
    assert_eq!(
        sent[2].form["allowed_payment_method_types[0]"],
        "wechat_pay"
    );
    assert_eq!(
        sent[2].form["payment_method_options[wechat_pay][client]"],
        "web"
    );
}

#[tokio::test]
async fn a_subscription_order_uses_subscription_mode_and_cards_only() {
    let shop = shop().await;
    let plan_id = shop.subscription_plan().await;
    shop.order(plan_id, "alipay")
        .await
        .assert_error(400, Some(40023));
    let order = shop.order(plan_id, "credit_card").await;
    assert_eq!(order.assert_ok()["billing_mode"], "subscription");
    let form = &shop.stripe.requests_to("POST", "/v1/checkout/sessions")[0].form;
    assert_eq!(form["mode"], "subscription");
    assert_eq!(
        form["line_items[0][price_data][recurring][interval]"],
        "month"
    );
    assert_eq!(
        form["subscription_data[metadata][order_no]"],
        order.json["data"]["order_no"].as_str().unwrap()
    );
    assert_eq!(form["allowed_payment_method_types[0]"], "card");
}

#[tokio::test]
async fn orders_refuse_free_unknown_and_inactive_plans_and_unknown_methods() {
    let shop = shop().await;
    let free: i64 = sqlx::query_scalar("SELECT id FROM plans WHERE plan_type = 'free'")
        .fetch_one(&shop.app.pool)
        .await
        .unwrap();
    shop.order(free, "credit_card")
        .await
        .assert_error(400, Some(40007));
    shop.order(999_999, "credit_card")
        .await
        .assert_error(400, Some(40007));
    let plan_id = shop.one_time_plan().await;
    shop.order(plan_id, "bitcoin")
        .await
        .assert_error(400, Some(40024));
    shop.admin()
        .call(
            Method::DELETE,
            &format!("/myapi/admin/plans/{plan_id}"),
            None,
        )
        .await
        .assert_ok();
    shop.order(plan_id, "credit_card")
        .await
        .assert_error(400, Some(40007));
    let wrong_type = json!({"plan_id": "one", "payment_method": "credit_card"});
    shop.user()
        .call(Method::POST, "/myapi/orders", Some(wrong_type))
        .await
        .assert_error(400, None);
    shop.app
        .post_json("/myapi/orders", &json!({"plan_id": plan_id}))
        .await
        .assert_error(401, Some(40101));
    assert_eq!(shop.count("orders").await, 0);
    assert!(shop.stripe.requests().is_empty());
}

#[tokio::test]
async fn without_stripe_configured_an_order_answers_50021_with_a_clear_message() {
    let shop = shop_without_stripe().await;
    let plan_id = shop.one_time_plan().await;
    let response = shop.order(plan_id, "credit_card").await;
    response.assert_error(500, Some(50021));
    assert!(
        response.json["msg"]
            .as_str()
            .unwrap()
            .contains("STRIPE_SECRET_KEY")
    );
    assert_eq!(shop.count("orders").await, 0);
}

#[tokio::test]
async fn a_stripe_failure_leaves_the_order_pending_for_a_retry() {
    let shop = shop().await;
    let plan_id = shop.one_time_plan().await;
    shop.stripe.set_failing(true);
    shop.order(plan_id, "credit_card")
        .await
        .assert_error(500, Some(50021));
    let order_no: String =
        sqlx::query_scalar("SELECT order_no FROM orders WHERE status = 'pending'")
            .fetch_one(&shop.app.pool)
            .await
            .unwrap();
    assert!(shop.get_order(&order_no).await["checkout_url"].is_null());

    shop.stripe.set_failing(false);
    let path = format!("/myapi/orders/{order_no}/checkout");
    let retried = shop.user().call(Method::POST, &path, None).await;
    assert!(
        retried.assert_ok()["checkout_url"]
            .as_str()
            .unwrap()
            .starts_with("https://checkout.stripe.com/")
    );
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_same_order() {
    let shop = shop().await;
    let plan_id = shop.one_time_plan().await;
    let body = json!({"plan_id": plan_id});
    let create = || {
        send(
            shop.app
                .request(Method::POST, "/myapi/orders")
                .bearer_auth(&shop.user().token)
                .header("Idempotency-Key", "buy-once")
                .json(&body),
        )
    };
    let first = create().await;
    let second = create().await;
    assert_eq!(
        first.assert_ok()["order_no"],
        second.assert_ok()["order_no"]
    );
    let concurrent = futures_util::future::join_all((0..5).map(|_| create())).await;
    for response in &concurrent {
        assert_eq!(
            response.assert_ok()["order_no"],
            first.json["data"]["order_no"]
        );
    }
    assert_eq!(shop.count("orders").await, 1);
    assert_eq!(
        shop.stripe
            .requests_to("POST", "/v1/checkout/sessions")
            .len(),
        1
    );
}

#[tokio::test]
async fn orders_are_listed_and_read_by_their_owner_only() {
    let shop = shop().await;
    let plan_id = shop.one_time_plan().await;
    let mut numbers = Vec::new();
    for _ in 0..3 {
        numbers.push(shop.pending_order(plan_id).await);
    }
    let list = shop
        .user()
        .call(Method::GET, "/myapi/orders?page=1&page_size=2", None)
        .await;
    let data = list.assert_ok();
    assert_eq!(data["total"], 3);
    assert_eq!(data["page_size"], 2);
    assert_eq!(data["items"].as_array().unwrap().len(), 2);
    assert_eq!(
        data["items"][0]["order_no"],
        numbers[2].as_str(),
        "newest first"
    );
    let paid = shop
        .user()
        .call(Method::GET, "/myapi/orders?status=paid", None)
        .await;
    assert_eq!(paid.assert_ok()["total"], 0);
    shop.user()
        .call(Method::GET, "/myapi/orders?status=bogus", None)
        .await
        .assert_error(400, None);
    shop.user()
        .call(Method::GET, "/myapi/orders?page_size=101", None)
        .await
        .assert_error(400, None);

    let stranger = shop.app.user("stranger@example.com", "user").await;
    let path = format!("/myapi/orders/{}", numbers[0]);
    stranger
        .call(Method::GET, &path, None)
        .await
        .assert_error(403, Some(40302));
    stranger
        .call(Method::POST, &format!("{path}/checkout"), None)
        .await
        .assert_error(403, Some(40302));
    stranger
        .call(Method::POST, &format!("{path}/cancel"), Some(json!({})))
        .await
        .assert_error(403, Some(40302));
    shop.user()
        .call(Method::GET, "/myapi/orders/ord_nothing", None)
        .await
        .assert_error(404, Some(40411));
    let others = stranger.call(Method::GET, "/myapi/orders", None).await;
    assert_eq!(others.assert_ok()["total"], 0);
}

#[tokio::test]
async fn checkout_gives_a_fresh_session_and_expires_the_previous_one() {
    let shop = shop().await;
    let plan_id = shop.one_time_plan().await;
    let order_no = shop.pending_order(plan_id).await;
    let path = format!("/myapi/orders/{order_no}/checkout");
    let fresh = shop.user().call(Method::POST, &path, None).await;
    assert_eq!(
        fresh.assert_ok()["checkout_url"],
        "https://checkout.stripe.com/c/pay/cs_test_fake_2"
    );
    let expired = shop
        .stripe
        .requests_to("POST", "/v1/checkout/sessions/cs_test_fake_1/expire");
    assert_eq!(expired.len(), 1);
    let created = shop.stripe.requests_to("POST", "/v1/checkout/sessions");
    assert_eq!(
        created.last().unwrap().idempotency_key.as_deref(),
        Some(format!("checkout-{order_no}-2").as_str())
    );

    shop.app.clock().advance(Duration::minutes(61));
    shop.user()
        .call(Method::POST, &path, None)
        .await
        .assert_error(400, Some(40021));
    assert_eq!(shop.get_order(&order_no).await["status"], "expired");
}

#[tokio::test]
async fn bad_stale_and_tampered_signatures_change_nothing() {
    let shop = shop().await;
    let plan_id = shop.one_time_plan().await;
    let order_no = shop.pending_order(plan_id).await;
    let session_id = shop.session_id(&order_no).await;
    let paid = event(
        "checkout.session.completed",
        completed_session(&order_no, &session_id, 990, "paid"),
    );
    let body = serde_json::to_vec(&paid).unwrap();
    let now = chrono::Utc::now().timestamp();
    let post = |header: String, body: Vec<u8>| {
        send(
            shop.app
                .request(Method::POST, "/myapi/webhooks/stripe")
                .header("Stripe-Signature", header)
                .body(body),
        )
    };
    let stale = support::stripe::stripe_signature(&body, support::scene::WEBHOOK_SECRET, now - 301);
    post(stale, body.clone()).await.assert_error(400, None);
    let wrong_secret = support::stripe::stripe_signature(&body, "whsec_other", now);
    post(wrong_secret, body.clone())
        .await
        .assert_error(400, None);
    let good = support::stripe::stripe_signature(&body, support::scene::WEBHOOK_SECRET, now);
    let mut tampered = body.clone();
    let at = tampered.windows(3).position(|w| w == b"990").unwrap();
    tampered[at] = b'1';
    post(good.clone(), tampered).await.assert_error(400, None);
    post(String::new(), body.clone())
        .await
        .assert_error(400, None);

    assert_eq!(shop.count("stripe_events").await, 0);
    assert_eq!(shop.get_order(&order_no).await["status"], "pending");
    assert_eq!(shop.status_credits().await, 0);
    post(good, body).await.assert_ok();
    assert_eq!(shop.get_order(&order_no).await["status"], "paid");
}

#[tokio::test]
async fn a_paid_checkout_grants_its_credits_once_whatever_the_deliveries() {
    let shop = shop().await;
    let plan_id = shop.one_time_plan().await;
    let order_no = shop.pending_order(plan_id).await;
    let session_id = shop.session_id(&order_no).await;
    let paid = event(
        "checkout.session.completed",
        completed_session(&order_no, &session_id, 990, "paid"),
    );
    let late_expiry = event(
        "checkout.session.expired",
        completed_session(&order_no, &session_id, 990, "unpaid"),
    );
    // Five copies of each, delivered at once, in a shuffled order.
    let mut deliveries: Vec<&Value> = Vec::new();
    for i in 0..10 {
        deliveries.push(if i % 3 == 0 { &late_expiry } else { &paid });
    }
    deliveries.extend([&paid, &paid, &late_expiry, &late_expiry]);
    let responses =
        futures_util::future::join_all(deliveries.iter().map(|e| shop.deliver(e))).await;
    for response in &responses {
        response.assert_ok();
    }
    let order = shop.get_order(&order_no).await;
    assert_eq!(order["status"], "paid");
    assert!(order["paid_at"].is_string() && order["checkout_url"].is_null());
    assert_eq!(shop.status_credits().await, 1000);
    assert_eq!(shop.count("ledger_entries").await, 1);
    assert_eq!(shop.count("stripe_events").await, 2);
    let path = format!("/myapi/orders/{order_no}/checkout");
    shop.user()
        .call(Method::POST, &path, None)
        .await
        .assert_error(400, Some(40022));

    let ledger = shop
        .user()
        .call(Method::GET, "/myapi/credits/ledger", None)
        .await;
    let entry = &ledger.assert_ok()["items"][0];
    assert_eq!(entry["amount"], 1000);
    assert_eq!(entry["balance_after"], 1000);
    assert_eq!(entry["reason"], "order");
    assert_eq!(entry["reference"], order_no.as_str());
    assert_ledger_consistent(&shop.app.pool).await;
}

#[tokio::test]
async fn an_amount_or_currency_that_disagrees_grants_nothing() {
    let shop = shop().await;
    let plan_id = shop.one_time_plan().await;
    let order_no = shop.pending_order(plan_id).await;
    let session_id = shop.session_id(&order_no).await;
    let cheap = event(
        "checkout.session.completed",
        completed_session(&order_no, &session_id, 1, "paid"),
    );
    shop.deliver(&cheap).await.assert_ok();
    let mut euros = completed_session(&order_no, &session_id, 990, "paid");
    euros["currency"] = json!("eur");
    shop.deliver(&event("checkout.session.completed", euros))
        .await
        .assert_ok();
    assert_eq!(shop.get_order(&order_no).await["status"], "pending");
    assert_eq!(shop.status_credits().await, 0);
}

#[tokio::test]
async fn delayed_payments_settle_on_their_async_events() {
    let shop = shop().await;
    let plan_id = shop.one_time_plan().await;
    let good = shop.pending_order(plan_id).await;
    let bad = shop.pending_order(plan_id).await;
    for (order_no, outcome) in [(&good, "succeeded"), (&bad, "failed")] {
        let session_id = shop.session_id(order_no).await;
        let unpaid = completed_session(order_no, &session_id, 990, "unpaid");
        shop.deliver(&event("checkout.session.completed", unpaid.clone()))
            .await
            .assert_ok();
        assert_eq!(shop.get_order(order_no).await["status"], "pending");
        let mut settled = unpaid;
        settled["payment_status"] = json!(if outcome == "succeeded" {
            "paid"
        } else {
            "unpaid"
        });
        let event_type = format!("checkout.session.async_payment_{outcome}");
        shop.deliver(&event(&event_type, settled)).await.assert_ok();
    }
    assert_eq!(shop.get_order(&good).await["status"], "paid");
    assert_eq!(shop.get_order(&bad).await["status"], "failed");
    assert_eq!(shop.status_credits().await, 1000);
}

#[tokio::test]
async fn an_expired_session_expires_its_order() {
    let shop = shop().await;
    let plan_id = shop.one_time_plan().await;
    let order_no = shop.pending_order(plan_id).await;
    let session_id = shop.session_id(&order_no).await;
    let expired = completed_session(&order_no, &session_id, 990, "unpaid");
    shop.deliver(&event("checkout.session.expired", expired))
        .await
        .assert_ok();
    assert_eq!(shop.get_order(&order_no).await["status"], "expired");
    let path = format!("/myapi/orders/{order_no}/checkout");
    shop.user()
        .call(Method::POST, &path, None)
        .await
        .assert_error(400, Some(40021));
}

#[tokio::test]
async fn unknown_event_types_answer_200_and_do_nothing() {
    let shop = shop().await;
    let response = shop.deliver(&event("plan.created", fixture("plan"))).await;
    response.assert_ok();
    assert_eq!(shop.count("ledger_entries").await, 0);
}

/// Pays a subscription order through its checkout and returns (order_no, subscription id).
async fn active_subscription(shop: &Scene) -> (String, String) {
    let plan_id = shop.subscription_plan().await;
    let order_no = shop.pending_order(plan_id).await;
    let session_id = shop.session_id(&order_no).await;
    let subscription = format!("sub_{}", &order_no[4..]);
    let completed = subscription_session(&order_no, &session_id, &subscription);
    shop.deliver(&event("checkout.session.completed", completed))
        .await
        .assert_ok();
    (order_no, subscription)
}

#[tokio::test]
async fn an_idempotency_key_belongs_to_one_user() {
    let shop = shop().await;
    let plan_id = shop.one_time_plan().await;
    let other = shop.app.user("other.buyer@example.com", "user").await;
    let create = |buyer: &support::Client| {
        send(
            buyer
                .request(Method::POST, "/myapi/orders")
                .header("Idempotency-Key", "shared-key")
                .json(&json!({"plan_id": plan_id})),
        )
    };
    let mine = create(shop.user()).await;
    let theirs = create(&other).await;
    let mine = mine.assert_ok()["order_no"].clone();
    let theirs = theirs.assert_ok()["order_no"].clone();
    assert_ne!(mine, theirs, "another user's key never returns my order");
    // Each user still gets their own order back on a retry.
    assert_eq!(create(&other).await.assert_ok()["order_no"], theirs);
    let owners: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT user_id) FROM orders WHERE order_no = ANY($1)")
            .bind(vec![
                mine.as_str().unwrap().to_owned(),
                theirs.as_str().unwrap().to_owned(),
            ])
            .fetch_one(&shop.app.pool)
            .await
            .unwrap();
    assert_eq!(owners, 2);
}

#[tokio::test]
async fn a_renewal_delivered_many_times_at_once_grants_once() {
    let shop = shop().await;
    let (order_no, subscription) = active_subscription(&shop).await;
    assert_eq!(shop.status_credits().await, 5000);
    let renewal = invoice(
        "in_concurrent",
        &subscription,
        &order_no,
        "subscription_cycle",
        chrono::Utc::now().timestamp() + 5_184_000,
    );
    // Stripe retries one event and may also send the same invoice under a second event id.
    let same_event = event("invoice.paid", renewal.clone());
    let other_event = event("invoice.paid", renewal);
    let deliveries = (0..12).map(|i| {
        let event = if i % 3 == 0 {
            &other_event
        } else {
            &same_event
        };
        shop.deliver(event)
    });
    for answer in futures_util::future::join_all(deliveries).await {
        answer.assert_ok();
    }
    assert_eq!(shop.status_credits().await, 10_000);
    let grants: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ledger_entries WHERE user_id = $1 AND amount = 5000",
    )
    .bind(shop.user().id)
    .fetch_one(&shop.app.pool)
    .await
    .unwrap();
    assert_eq!(grants, 2, "the checkout's grant and one renewal");
    assert_ledger_consistent(&shop.app.pool).await;
}

/// The gateway applies the limits of the plan the account subscribes to, not the free plan's.
#[tokio::test]
async fn gateway_calls_follow_the_subscriptions_limits() {
    let shop = shop().await;
    shop.set_limits(3, 1000, Some(10)).await;
    let key = shop.new_key().await;
    let call = || {
        send(
            shop.app
                .request(Method::GET, "/api/v1/echo/x")
                .header("X-API-Key", &key),
        )
    };
    shop.fund(100).await;
    let free = call().await;
    assert_eq!(free.status, 200, "{}", free.text);
    assert_eq!(free.header("x-ratelimit-limit"), Some("3"));

    // The Pro plan: 20 a second, 50,000 an hour, 100,000 a month.
    active_subscription(&shop).await;
    support::eventually(
        std::time::Duration::from_secs(5),
        "the subscription's limits reach the gateway",
        || async { (call().await.header("x-ratelimit-limit") == Some("20")).then_some(()) },
    )
    .await;
    // Past the free plan's monthly 10, calls go on under the subscription's quota: never a
    // 42903 (a 42901 may come while the past second's calls still count, and is waited out).
    for _ in 0..12 {
        support::eventually(
            std::time::Duration::from_secs(5),
            "a call is served",
            || async {
                let answer = call().await;
                match answer.status {
                    200 => Some(()),
                    _ => {
                        answer.assert_error(429, Some(42901));
                        None
                    }
                }
            },
        )
        .await;
    }
}

#[tokio::test]
async fn a_subscription_activates_renews_and_falls_back_to_free_when_deleted() {
    let shop = shop().await;
    let free = shop.user().call(Method::GET, "/myapi/status", None).await;
    let free = free.assert_ok().clone();
    assert_eq!(free["plan"]["plan_type"], "free");
    assert!(free["subscription"].is_null());

    let (order_no, subscription) = active_subscription(&shop).await;
    let order = shop.get_order(&order_no).await;
    assert_eq!(order["status"], "paid");
    assert_eq!(order["subscription"]["status"], "active");
    assert_eq!(shop.status_credits().await, 5000);
    let (customer, stored): (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT stripe_customer_id, stripe_subscription_id FROM orders WHERE order_no = $1",
    )
    .bind(&order_no)
    .fetch_one(&shop.app.pool)
    .await
    .unwrap();
    assert_eq!(
        (customer.as_deref(), stored.as_deref()),
        (Some("cus_fake"), Some(subscription.as_str()))
    );

    let status = shop.user().call(Method::GET, "/myapi/status", None).await;
    let data = status.assert_ok();
    assert_eq!(data["plan"]["name"], "Pro");
    assert_eq!(data["rate_limits"]["rps"], 20);
    assert_eq!(data["monthly_quota"], 100000);
    assert_eq!(data["subscription"]["order_no"], order_no.as_str());

    // The first invoice shares the checkout's grant; a renewal grants another period.
    let now = chrono::Utc::now().timestamp();
    let first = invoice(
        "in_first",
        &subscription,
        &order_no,
        "subscription_create",
        now + 2_592_000,
    );
    shop.deliver(&event("invoice.paid", first))
        .await
        .assert_ok();
    assert_eq!(shop.status_credits().await, 5000);
    let renewal = invoice(
        "in_second",
        &subscription,
        &order_no,
        "subscription_cycle",
        now + 5_184_000,
    );
    let renewal_event = event("invoice.paid", renewal);
    for _ in 0..3 {
        shop.deliver(&renewal_event).await.assert_ok();
    }
    assert_eq!(shop.status_credits().await, 10_000);
    let period_end = shop.get_order(&order_no).await["subscription"]["current_period_end"].clone();
    let expected = chrono::DateTime::from_timestamp(now + 5_184_000, 0).unwrap();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(period_end.as_str().unwrap()).unwrap(),
        expected
    );

    let failed = invoice(
        "in_third",
        &subscription,
        &order_no,
        "subscription_cycle",
        now + 7_776_000,
    );
    shop.deliver(&event_at("invoice.payment_failed", failed, now + 10))
        .await
        .assert_ok();
    assert_eq!(
        shop.get_order(&order_no).await["subscription"]["status"],
        "past_due"
    );
    let recovered = subscription_object(&subscription, &order_no, "active", true);
    shop.deliver(&event_at(
        "customer.subscription.updated",
        recovered,
        now + 20,
    ))
    .await
    .assert_ok();
    let order = shop.get_order(&order_no).await;
    assert_eq!(order["subscription"]["status"], "active");
    assert_eq!(order["subscription"]["cancel_at_period_end"], true);
    // An older event arriving late does not undo the newer state.
    let stale = subscription_object(&subscription, &order_no, "past_due", false);
    shop.deliver(&event_at("customer.subscription.updated", stale, now + 15))
        .await
        .assert_ok();
    assert_eq!(
        shop.get_order(&order_no).await["subscription"]["status"],
        "active"
    );

    let deleted = subscription_object(&subscription, &order_no, "canceled", false);
    shop.deliver(&event_at(
        "customer.subscription.deleted",
        deleted,
        now + 30,
    ))
    .await
    .assert_ok();
    let order = shop.get_order(&order_no).await;
    assert_eq!(order["subscription"]["status"], "canceled");
    assert_eq!(order["status"], "cancelled");
    let revived = subscription_object(&subscription, &order_no, "active", false);
    shop.deliver(&event_at(
        "customer.subscription.updated",
        revived,
        now + 40,
    ))
    .await
    .assert_ok();
    assert_eq!(
        shop.get_order(&order_no).await["subscription"]["status"],
        "canceled"
    );
    let status = shop.user().call(Method::GET, "/myapi/status", None).await;
    assert_eq!(status.assert_ok()["plan"]["plan_type"], "free");
    assert!(status.json["data"]["subscription"].is_null());
    assert_ledger_consistent(&shop.app.pool).await;
}

#[tokio::test]
async fn a_deletion_arriving_before_the_invoice_keeps_the_subscription_ended() {
    let shop = shop().await;
    let (order_no, subscription) = active_subscription(&shop).await;
    let now = chrono::Utc::now().timestamp();
    let deleted = subscription_object(&subscription, &order_no, "canceled", false);
    shop.deliver(&event_at(
        "customer.subscription.deleted",
        deleted,
        now + 60,
    ))
    .await
    .assert_ok();
    let renewal = invoice(
        "in_late",
        &subscription,
        &order_no,
        "subscription_cycle",
        now + 2_592_000,
    );
    shop.deliver(&event_at("invoice.paid", renewal, now + 30))
        .await
        .assert_ok();
    let order = shop.get_order(&order_no).await;
    assert_eq!(order["subscription"]["status"], "canceled");
    // The invoice was paid, so its period's credits are granted all the same.
    assert_eq!(shop.status_credits().await, 10_000);
}

#[tokio::test]
async fn a_refund_takes_the_credits_back_down_to_zero_and_records_the_shortfall() {
    let shop = shop().await;
    let plan_id = shop.one_time_plan().await;
    let order_no = shop.pending_order(plan_id).await;
    let session_id = shop.session_id(&order_no).await;
    let paid = event(
        "checkout.session.completed",
        completed_session(&order_no, &session_id, 990, "paid"),
    );
    shop.deliver(&paid).await.assert_ok();
    let path = format!("/myapi/admin/users/{}/credits", shop.user().id);
    let spend = json!({"amount": -400, "reason": "spent on calls"});
    shop.admin()
        .call(Method::POST, &path, Some(spend))
        .await
        .assert_ok();
    assert_eq!(shop.status_credits().await, 600);

    let mut charge = fixture("charge");
    charge["id"] = json!("ch_refund");
    charge["amount"] = json!(990);
    charge["amount_refunded"] = json!(990);
    charge["refunded"] = json!(true);
    charge["currency"] = json!("usd");
    charge["payment_intent"] = json!(format!("pi_{}", &order_no[4..]));
    charge["metadata"] = json!({});
    let refund = event("charge.refunded", charge);
    shop.deliver(&refund).await.assert_ok();
    shop.deliver(&refund).await.assert_ok();
    assert_eq!(shop.status_credits().await, 0);
    assert_eq!(shop.get_order(&order_no).await["status"], "refunded");
    let shortfall: i64 =
        sqlx::query_scalar("SELECT refund_shortfall FROM orders WHERE order_no = $1")
            .bind(&order_no)
            .fetch_one(&shop.app.pool)
            .await
            .unwrap();
    assert_eq!(shortfall, 400);
    assert_ledger_consistent(&shop.app.pool).await;
}

#[tokio::test]
async fn cancelling_checks_the_order_then_asks_stripe() {
    let shop = shop().await;
    let one_time = shop.one_time_plan().await;
    let one_time_order = shop.pending_order(one_time).await;
    shop.cancel(&one_time_order, json!({}))
        .await
        .assert_error(400, Some(40026));
    shop.cancel("ord_missing", json!({}))
        .await
        .assert_error(404, Some(40411));

    let sub_plan = shop.subscription_plan().await;
    let pending = shop.pending_order(sub_plan).await;
    shop.cancel(&pending, json!({}))
        .await
        .assert_error(400, Some(40025));

    // Paid, but the subscription id has not arrived yet.
    let session_id = shop.session_id(&pending).await;
    let mut without_id = subscription_session(&pending, &session_id, "x");
    without_id["subscription"] = Value::Null;
    shop.deliver(&event("checkout.session.completed", without_id))
        .await
        .assert_ok();
    shop.cancel(&pending, json!({}))
        .await
        .assert_error(400, Some(40028));
    // One live subscription at a time: this one ends before the next is bought.
    shop.end_subscription_in_database(&pending).await;

    let manual = json!({"user_id": shop.user().id, "plan_id": sub_plan});
    let manual = shop
        .admin()
        .call(Method::POST, "/myapi/admin/orders", Some(manual))
        .await;
    let manual_no = manual.assert_ok()["order_no"].as_str().unwrap().to_owned();
    shop.cancel(&manual_no, json!({}))
        .await
        .assert_error(400, Some(40027));
    shop.end_subscription_in_database(&manual_no).await;

    let (order_no, subscription) = active_subscription(&shop).await;
    shop.stripe.set_failing(true);
    shop.cancel(&order_no, json!({}))
        .await
        .assert_error(500, Some(50023));
    shop.stripe.set_failing(false);
    let at_end = shop.cancel(&order_no, json!({"at_period_end": true})).await;
    assert_eq!(
        at_end.assert_ok()["subscription"]["cancel_at_period_end"],
        true
    );
    let updates = shop
        .stripe
        .requests_to("POST", &format!("/v1/subscriptions/{subscription}"));
    assert_eq!(updates.last().unwrap().form["cancel_at_period_end"], "true");
    shop.cancel(&order_no, json!({"at_period_end": false}))
        .await
        .assert_ok();
    assert_eq!(
        shop.stripe
            .requests_to("DELETE", &format!("/v1/subscriptions/{subscription}"))
            .len(),
        1
    );
    // Webhooks settle the final state.
    assert_eq!(
        shop.get_order(&order_no).await["subscription"]["status"],
        "active"
    );
}

#[tokio::test]
async fn cancelling_without_stripe_configured_answers_50022() {
    let shop = shop_without_stripe().await;
    let plan_id = shop.subscription_plan().await;
    sqlx::query(
        r#"INSERT INTO orders (order_no, user_id, plan_id, status, billing_mode, payment_method,
               provider, amount_cents, currency, credits, stripe_subscription_id, expires_at)
           VALUES ('ord_legacy', $1, $2, 'paid', 'subscription', 'credit_card', 'stripe', 2900,
                   'usd', 5000, 'sub_legacy', now())"#,
    )
    .bind(shop.user().id)
    .bind(plan_id)
    .execute(&shop.app.pool)
    .await
    .unwrap();
    let response = shop
        .user()
        .call(
            Method::POST,
            "/myapi/orders/ord_legacy/cancel",
            Some(json!({})),
        )
        .await;
    response.assert_error(500, Some(50022));
}

#[tokio::test]
async fn a_manual_order_is_paid_and_granted_like_a_stripe_payment() {
    let shop = shop().await;
    let plan_id = shop.one_time_plan().await;
    let body = json!({"user_id": shop.user().id, "plan_id": plan_id});
    shop.user()
        .call(Method::POST, "/myapi/admin/orders", Some(body.clone()))
        .await
        .assert_error(403, None);
    let response = shop
        .admin()
        .call(Method::POST, "/myapi/admin/orders", Some(body))
        .await;
    let order = response.assert_ok();
    assert_eq!(order["status"], "paid");
    assert_eq!(order["provider"], "manual");
    assert_eq!(shop.status_credits().await, 1000);
    let unknown = json!({"user_id": Uuid::new_v4(), "plan_id": plan_id});
    shop.admin()
        .call(Method::POST, "/myapi/admin/orders", Some(unknown))
        .await
        .assert_error(404, None);

    let sub_plan = shop.subscription_plan().await;
    let body = json!({"user_id": shop.user().id, "plan_id": sub_plan});
    shop.admin()
        .call(Method::POST, "/myapi/admin/orders", Some(body))
        .await
        .assert_ok();
    let status = shop.user().call(Method::GET, "/myapi/status", None).await;
    assert_eq!(status.assert_ok()["plan"]["name"], "Pro");
    assert_eq!(shop.status_credits().await, 6000);
    assert!(shop.stripe.requests().is_empty());
    // Both are listed with the invoices, for the accounts.
    let invoices = shop.user().call(Method::GET, "/myapi/invoices", None).await;
    let invoices = invoices.assert_ok()["items"].as_array().unwrap().clone();
    assert_eq!(invoices.len(), 2);
    assert_eq!(invoices[0]["amount_paid_cents"], 2900);
    assert!(invoices[0]["period_end"].is_string());
    assert_eq!(invoices[1]["amount_paid_cents"], 990);
    assert_ledger_consistent(&shop.app.pool).await;
}

#[tokio::test]
async fn admins_adjust_credits_down_to_zero_and_once_per_idempotency_key() {
    let shop = shop().await;
    let path = format!("/myapi/admin/users/{}/credits", shop.user().id);
    let add = json!({"amount": 100, "reason": "welcome"});
    shop.user()
        .call(Method::POST, &path, Some(add.clone()))
        .await
        .assert_error(403, None);
    let keyed = || {
        send(
            shop.app
                .request(Method::POST, &path)
                .bearer_auth(&shop.admin().token)
                .header("Idempotency-Key", "grant-1")
                .json(&add),
        )
    };
    assert_eq!(keyed().await.assert_ok()["applied"], true);
    let replay = keyed().await;
    assert_eq!(replay.assert_ok()["applied"], false);
    assert_eq!(replay.json["data"]["balance"], 100);
    let take = json!({"amount": -30, "reason": "correction"});
    assert_eq!(
        shop.admin()
            .call(Method::POST, &path, Some(take))
            .await
            .assert_ok()["balance"],
        70
    );
    let too_much = json!({"amount": -71, "reason": "too much"});
    shop.admin()
        .call(Method::POST, &path, Some(too_much))
        .await
        .assert_error(400, None);
    let zero = json!({"amount": 0, "reason": "nothing"});
    shop.admin()
        .call(Method::POST, &path, Some(zero))
        .await
        .assert_error(400, None);
    let nobody = format!("/myapi/admin/users/{}/credits", Uuid::new_v4());
    shop.admin()
        .call(
            Method::POST,
            &nobody,
            Some(json!({"amount": 5, "reason": "x"})),
        )
        .await
        .assert_error(404, None);

    let ledger = shop
        .user()
        .call(Method::GET, "/myapi/credits/ledger?page_size=1", None)
        .await;
    let data = ledger.assert_ok();
    assert_eq!(data["total"], 2);
    assert_eq!(data["items"][0]["amount"], -30);
    assert_eq!(data["items"][0]["balance_after"], 70);
    assert_eq!(data["items"][0]["reason"], "adjustment");
    // The user reads why, never which admin: no address of the admin's in what they see.
    assert_eq!(data["items"][0]["reference"], "correction");
    assert!(!ledger.text.contains("admin@"), "{}", ledger.text);
    assert_eq!(shop.status_credits().await, 70);
    let update = sqlx::query("UPDATE ledger_entries SET amount = 1")
        .execute(&shop.app.pool)
        .await;
    assert!(update.is_err(), "the ledger is append-only");
    assert_ledger_consistent(&shop.app.pool).await;
}

/// The fake Stripe is no kinder than Stripe: a test that passes against it does not depend on
/// a missing key, an unknown parameter or an idempotency key reused with other parameters.
#[tokio::test]
async fn the_fake_stripe_refuses_what_stripe_refuses() {
    let stripe = support::stripe::FakeStripe::start().await;
    let client = reqwest::Client::new();
    let sessions = format!("{}v1/checkout/sessions", stripe.base_url);
    let create = |key: &'static str, form: &'static [(&'static str, &'static str)]| {
        client
            .post(&sessions)
            .bearer_auth(key)
            .header("Idempotency-Key", "same-key")
            .form(form)
    };
    let good: &[(&str, &str)] = &[("mode", "payment"), ("success_url", "https://x.test/ok")];
    let refused = support::send(create("sk_test_other", good)).await;
    assert_eq!(refused.status, 401, "{}", refused.text);
    let unknown = support::send(create(support::stripe::SECRET_KEY, &[("modee", "payment")])).await;
    assert_eq!(unknown.status, 400, "{}", unknown.text);
    assert_eq!(unknown.json["error"]["param"], "modee");
    let first = support::send(create(support::stripe::SECRET_KEY, good)).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let replay = support::send(create(support::stripe::SECRET_KEY, good)).await;
    assert_eq!(replay.json, first.json, "a replay answers the first answer");
    let other = &[
        ("mode", "subscription"),
        ("success_url", "https://x.test/ok"),
    ];
    let misuse = support::send(create(support::stripe::SECRET_KEY, other)).await;
    assert_eq!(misuse.status, 400, "{}", misuse.text);
    assert_eq!(misuse.json["error"]["type"], "idempotency_error");
}

/// Every number an admin sets is bounded, and the 400 names the field: values whose arithmetic
/// could overflow (a price, credits, a quota, limits, a call's cost, an adjustment) never get in.
#[tokio::test]
async fn admin_numbers_are_bounded_and_the_refusal_names_the_field() {
    let shop = shop().await;
    let plan = |field: &str, value: serde_json::Value| {
        let mut plan = json!({"name": "Big", "plan_type": "one_time", "amount_cents": 100,
            "credits": 1, "rps_limit": 1, "rph_limit": 1});
        plan[field] = value;
        plan
    };
    for (field, value) in [
        ("amount_cents", json!(i64::MAX)),
        ("credits", json!(i64::MAX)),
        ("monthly_quota", json!(1_000_000_000_001i64)),
        ("rps_limit", json!(i32::MAX)),
        ("rph_limit", json!(0)),
    ] {
        let refused = shop
            .admin()
            .call(Method::POST, "/myapi/admin/plans", Some(plan(field, value)))
            .await;
        refused.assert_error(400, None);
        assert!(
            refused.json["msg"].as_str().unwrap().contains(field),
            "{}",
            refused.text
        );
    }
    let provider = json!({"slug": "dear", "base_url": "http://127.0.0.1:9", "cost": i64::MAX,
        "timeout_ms": 1000});
    let refused = shop
        .admin()
        .call(Method::POST, "/myapi/admin/providers", Some(provider))
        .await;
    refused.assert_error(400, None);
    assert!(refused.json["msg"].as_str().unwrap().contains("cost"));

    let path = format!("/myapi/admin/users/{}/credits", shop.user().id);
    let grant = json!({"amount": 5, "reason": "start"});
    shop.admin()
        .call(Method::POST, &path, Some(grant))
        .await
        .assert_ok();
    for amount in [i64::MAX, i64::MIN, 1_000_000_000_001] {
        let huge = json!({"amount": amount, "reason": "overflow"});
        let refused = shop.admin().call(Method::POST, &path, Some(huge)).await;
        refused.assert_error(400, None);
        assert!(
            refused.json["msg"].as_str().unwrap().contains("amount"),
            "{}",
            refused.text
        );
    }
    assert_eq!(shop.status_credits().await, 5);
}
