//! What a customer hears and keeps (issue 12 points 8 and 11): receipts, failed renewals,
//! cancellations and low balances by email in the account's language, the preferences that
//! choose them, and a subscription's limits lasting the grace period and no longer.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::support::eventually;
use super::support::scene::Scene;
use super::support::smtp::Mail;
use super::{active_subscription, event, event_at, invoice, shop, subscription_object};

const USER: &str = "caller@example.com";

impl Scene {
    /// Waits until the user has received `count` emails, and returns them in order.
    async fn user_mails(&self, count: usize) -> Vec<Mail> {
        eventually(Duration::from_secs(15), "the emails", || async {
            let mails = self.smtp.mails_to(USER);
            (mails.len() >= count).then_some(mails)
        })
        .await
    }

    async fn set_preferences(&self, change: Value) -> super::support::TestResponse {
        self.user()
            .call(Method::PATCH, "/myapi/user/profile", Some(change))
            .await
    }

    async fn plan_type(&self) -> Value {
        let status = self.user().call(Method::GET, "/myapi/status", None).await;
        status.assert_ok()["plan"]["plan_type"].clone()
    }

    async fn set_order_time(&self, order_no: &str, column: &str, days_ago: i64) {
        let statement = format!(
            "UPDATE orders SET {column} = now() - make_interval(days => $2) WHERE order_no = $1"
        );
        // `column` is one of this file's literals.
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(order_no)
            .bind(days_ago as i32)
            .execute(&self.app.pool)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn payments_failed_renewals_and_cancellations_are_emailed_once_in_the_users_language() {
    let shop = shop().await;
    shop.set_preferences(json!({"lang": "zh"}))
        .await
        .assert_ok();
    let (order_no, subscription) = active_subscription(&shop).await;
    let now = chrono::Utc::now().timestamp();
    let mut first = invoice(
        "in_first",
        &subscription,
        &order_no,
        "subscription_create",
        now,
    );
    first["hosted_invoice_url"] = json!("https://invoice.stripe.com/i/in_first");
    let paid = event("invoice.paid", first);
    shop.deliver(&paid).await.assert_ok();
    let receipt = &shop.user_mails(1).await[0];
    assert!(
        receipt.subject().contains("已收到付款"),
        "{}",
        receipt.subject()
    );
    assert!(
        receipt.subject().contains("29.00 USD"),
        "{}",
        receipt.subject()
    );
    let body = receipt.text();
    assert!(body.contains(&order_no) && body.contains("5000"), "{body}");
    assert!(
        body.contains("https://invoice.stripe.com/i/in_first"),
        "{body}"
    );

    let failed = invoice(
        "in_next",
        &subscription,
        &order_no,
        "subscription_cycle",
        now,
    );
    shop.deliver(&event_at(
        "invoice.payment_failed",
        failed.clone(),
        now + 10,
    ))
    .await
    .assert_ok();
    // Stripe retries and reports each failure; the customer hears of the first.
    shop.deliver(&event_at("invoice.payment_failed", failed, now + 20))
        .await
        .assert_ok();
    let ending = subscription_object(&subscription, &order_no, "active", true);
    shop.deliver(&event_at("customer.subscription.updated", ending, now + 30))
        .await
        .assert_ok();
    let mails = shop.user_mails(3).await;
    assert!(
        mails[1].subject().contains("订阅扣款失败"),
        "{}",
        mails[1].subject()
    );
    assert!(mails[1].text().contains("3 天"), "{}", mails[1].text());
    assert!(
        mails[2].subject().contains("您的订阅将于"),
        "{}",
        mails[2].subject()
    );
    // Nothing else is queued: the outbox is empty once the three are out.
    eventually(Duration::from_secs(10), "an empty outbox", || async {
        (shop.count("mail_outbox").await == 0).then_some(())
    })
    .await;
    assert_eq!(shop.smtp.mails_to(USER).len(), 3);
}

#[tokio::test]
async fn a_low_balance_alert_is_emailed_once_per_crossing() {
    let shop = shop().await;
    shop.fund(1000).await;
    let profile = shop
        .set_preferences(json!({"low_balance_alert": 500}))
        .await;
    assert_eq!(profile.assert_ok()["low_balance_alert"], 500);
    shop.fund(-600).await;
    let alert = &shop.user_mails(1).await[0];
    assert!(alert.subject().contains("below 500"), "{}", alert.subject());
    assert!(alert.text().contains("400 credits"), "{}", alert.text());
    // Further down: no second email while the balance stays below.
    shop.fund(-100).await;
    // Back above re-arms; the next crossing is told with its own balance.
    shop.fund(300).await;
    eventually(Duration::from_secs(10), "the alert re-armed", || async {
        let notified: bool =
            sqlx::query_scalar("SELECT low_balance_notified FROM users WHERE id = $1")
                .bind(shop.user().id)
                .fetch_one(&shop.app.pool)
                .await
                .unwrap();
        (!notified).then_some(())
    })
    .await;
    shop.fund(-150).await;
    let mails = shop.user_mails(2).await;
    assert_eq!(mails.len(), 2);
    assert!(
        mails[1].text().contains("450 credits"),
        "{}",
        mails[1].text()
    );
}

#[tokio::test]
async fn preferences_are_validated_and_null_turns_the_alert_off() {
    let shop = shop().await;
    shop.set_preferences(json!({"lang": "fr"}))
        .await
        .assert_error(400, None);
    shop.set_preferences(json!({"low_balance_alert": 0}))
        .await
        .assert_error(400, None);
    let set = shop
        .set_preferences(json!({"low_balance_alert": 50, "lang": "zh"}))
        .await;
    assert_eq!(set.assert_ok()["lang"], "zh");
    // An absent field stays; null clears.
    let kept = shop.set_preferences(json!({"lang": "en"})).await;
    assert_eq!(kept.assert_ok()["low_balance_alert"], 50);
    let cleared = shop
        .set_preferences(json!({"low_balance_alert": null}))
        .await;
    assert_eq!(cleared.assert_ok()["low_balance_alert"], Value::Null);
    let profile = shop
        .user()
        .call(Method::GET, "/myapi/user/profile", None)
        .await;
    assert_eq!(profile.assert_ok()["lang"], "en");
}

#[tokio::test]
async fn a_subscription_keeps_its_limits_for_the_grace_period_and_no_longer() {
    let shop = shop().await;
    let (order_no, subscription) = active_subscription(&shop).await;
    assert_eq!(shop.plan_type().await, "subscription");
    // The period ended two days ago and no renewal was heard of (a lost webhook): still within
    // the three days of grace; four days: the free plan.
    shop.set_order_time(&order_no, "current_period_end", 2)
        .await;
    assert_eq!(shop.plan_type().await, "subscription");
    shop.set_order_time(&order_no, "current_period_end", 4)
        .await;
    assert_eq!(shop.plan_type().await, "free");

    // A renewal heard of restores it; a failed one keeps it for the grace from the failure.
    let now = chrono::Utc::now().timestamp();
    let renewal = invoice(
        "in_2",
        &subscription,
        &order_no,
        "subscription_cycle",
        now + 86_400,
    );
    shop.deliver(&event("invoice.paid", renewal))
        .await
        .assert_ok();
    assert_eq!(shop.plan_type().await, "subscription");
    let failed = invoice("in_3", &subscription, &order_no, "subscription_cycle", now);
    shop.deliver(&event_at("invoice.payment_failed", failed, now + 10))
        .await
        .assert_ok();
    assert_eq!(shop.plan_type().await, "subscription");
    shop.set_order_time(&order_no, "subscription_state_at", 4)
        .await;
    assert_eq!(shop.plan_type().await, "free");

    // A manual subscription ends at its period's end the same way.
    shop.end_subscription_in_database(&order_no).await;
    let plan_id = shop.subscription_plan().await;
    let manual = json!({"user_id": shop.user().id, "plan_id": plan_id});
    let manual = shop
        .admin()
        .call(Method::POST, "/myapi/admin/orders", Some(manual))
        .await;
    let manual_no = manual.assert_ok()["order_no"].as_str().unwrap().to_owned();
    assert_eq!(shop.plan_type().await, "subscription");
    shop.set_order_time(&manual_no, "current_period_end", 4)
        .await;
    assert_eq!(shop.plan_type().await, "free");
}
