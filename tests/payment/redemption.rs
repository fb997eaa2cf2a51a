//! Redemption codes (issue 12 point 10): batches made by admins, codes shown once and redeemed
//! once under concurrency, withdrawn and expired codes, plan codes, and wrong guesses limited.

use reqwest::Method;
use serde_json::{Value, json};

use super::shop;
use super::support::scene::Scene;
use super::support::{TestResponse, assert_ledger_consistent, send};

impl Scene {
    async fn new_batch(&self, body: Value) -> Value {
        let created = self
            .admin()
            .call(Method::POST, "/myapi/admin/redemption-batches", Some(body))
            .await;
        created.assert_ok().clone()
    }

    async fn redeem(&self, code: &str) -> TestResponse {
        self.user()
            .call(Method::POST, "/myapi/redeem", Some(json!({ "code": code })))
            .await
    }

    async fn batch(&self, id: &Value) -> Value {
        let list = self
            .admin()
            .call(Method::GET, "/myapi/admin/redemption-batches", None)
            .await;
        let items = list.assert_ok()["items"].as_array().unwrap().clone();
        items.into_iter().find(|batch| &batch["id"] == id).unwrap()
    }
}

fn codes(batch: &Value) -> Vec<String> {
    batch["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|code| code.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_code_is_redeemed_once_even_when_many_try_at_once() {
    let shop = shop().await;
    let batch = shop
        .new_batch(json!({"count": 3, "credits": 250, "note": "launch cards"}))
        .await;
    let codes = codes(&batch);
    assert_eq!(codes.len(), 3);
    assert!(
        codes
            .iter()
            .all(|code| code.len() == 19 && code.matches('-').count() == 3)
    );
    // Only digests are stored.
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM redemption_codes WHERE batch_id = $1")
            .bind(batch["id"].as_i64().unwrap())
            .fetch_one(&shop.app.pool)
            .await
            .unwrap();
    assert_eq!(stored, 3);

    let attempts: Vec<_> = (0..8).map(|_| shop.redeem(&codes[0])).collect();
    let answers = futures_util::future::join_all(attempts).await;
    let won: Vec<&TestResponse> = answers.iter().filter(|a| a.status == 200).collect();
    assert_eq!(won.len(), 1, "exactly one redemption wins");
    assert_eq!(won[0].json["data"]["credits_added"], 250);
    assert_eq!(won[0].json["data"]["credits"], 250);
    assert_eq!(won[0].json["data"]["plan_id"], Value::Null);
    for lost in answers.iter().filter(|a| a.status != 200) {
        lost.assert_error(400, Some(40030));
    }
    // Typed as people type it: lower case, spaces for dashes.
    let typed = codes[1].to_lowercase().replace('-', " ");
    let second = shop.redeem(&typed).await;
    assert_eq!(second.assert_ok()["credits"], 500);
    let batch = shop.batch(&batch["id"]).await;
    assert_eq!(
        (batch["used"].clone(), batch["unused"].clone()),
        (json!(2), json!(1))
    );
    assert_eq!(batch["note"], "launch cards");
    assert_ledger_consistent(&shop.app.pool).await;
}

#[tokio::test]
async fn withdrawn_expired_and_plan_codes_and_csv_batches() {
    let shop = shop().await;
    let csv = shop
        .admin()
        .request(Method::POST, "/myapi/admin/redemption-batches")
        .header("accept", "text/csv")
        .json(&json!({"count": 4, "credits": 10}));
    let csv = send(csv).await;
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    let lines: Vec<&str> = csv.text.lines().collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0], "code");
    let batch_id: i64 = csv.header("x-batch-id").unwrap().parse().unwrap();
    let disabled = shop
        .admin()
        .call(
            Method::POST,
            &format!("/myapi/admin/redemption-batches/{batch_id}/disable"),
            None,
        )
        .await;
    assert!(disabled.assert_ok()["disabled_at"].is_string());
    let withdrawn = shop.redeem(lines[1]).await;
    withdrawn.assert_error(400, Some(40030));
    assert!(withdrawn.text.contains("withdrawn"), "{}", withdrawn.text);

    let expiring = shop
        .new_batch(json!({"count": 1, "credits": 10,
            "expires_at": (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339()}))
        .await;
    sqlx::query(
        "UPDATE redemption_batches SET expires_at = now() - interval '1 second' WHERE id = $1",
    )
    .bind(expiring["id"].as_i64().unwrap())
    .execute(&shop.app.pool)
    .await
    .unwrap();
    let expired = shop.redeem(&codes(&expiring)[0]).await;
    expired.assert_error(400, Some(40030));
    assert!(expired.text.contains("expired"), "{}", expired.text);

    let plan_id = shop.subscription_plan().await;
    let plan_batch = shop
        .new_batch(json!({"count": 1, "plan_id": plan_id}))
        .await;
    let redeemed = shop.redeem(&codes(&plan_batch)[0]).await;
    let data = redeemed.assert_ok();
    assert_eq!(data["plan_id"], plan_id);
    assert_eq!(data["credits_added"], 5000);
    let status = shop.user().call(Method::GET, "/myapi/status", None).await;
    assert_eq!(status.assert_ok()["plan"]["name"], "Pro");
    assert_ledger_consistent(&shop.app.pool).await;
}

#[tokio::test]
async fn wrong_codes_are_limited_and_batches_are_validated_and_for_admins() {
    let shop = shop().await;
    let batch = shop.new_batch(json!({"count": 1, "credits": 5})).await;
    for guess in 0..10 {
        let wrong = shop.redeem(&format!("AAAA-BBBB-CCCC-{guess:04}")).await;
        wrong.assert_error(400, Some(40030));
    }
    // Past ten wrong guesses an hour even a good code waits: no look-up is made.
    let throttled = shop.redeem(&codes(&batch)[0]).await;
    assert_eq!(throttled.status, 429, "{}", throttled.text);
    assert!(throttled.header("retry-after").is_some());

    for (body, field) in [
        (json!({"count": 0, "credits": 5}), "count"),
        (json!({"count": 10001, "credits": 5}), "count"),
        (json!({"count": 1, "credits": 5, "plan_id": 1}), "plan_id"),
        (json!({"count": 1}), "credits"),
        (json!({"count": 1, "credits": 0}), "credits"),
        (json!({"count": 1, "plan_id": 999999}), "plan_id"),
    ] {
        let refused = shop
            .admin()
            .call(Method::POST, "/myapi/admin/redemption-batches", Some(body))
            .await;
        refused.assert_error(400, None);
        assert!(refused.text.contains(field), "{}", refused.text);
    }
    let not_admin = shop
        .user()
        .call(
            Method::POST,
            "/myapi/admin/redemption-batches",
            Some(json!({"count": 1, "credits": 5})),
        )
        .await;
    assert_eq!(not_admin.status, 403);
}
