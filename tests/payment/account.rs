//! An account's data as a whole (issue 14 point 5): its export, and its deletion by the user or
//! an admin (the Stripe subscription cancelled, keys and sessions ended, personal data erased,
//! orders and the ledger kept under an anonymous tombstone).

use reqwest::Method;
use serde_json::json;

use super::support::{USER_PASSWORD, assert_ledger_consistent};
use super::{active_subscription, shop};

#[tokio::test]
async fn the_export_holds_everything_about_the_user_and_no_secret() {
    let shop = shop().await;
    let (order_no, _) = active_subscription(&shop).await;
    let key = shop.user().new_key().await;
    let export = shop
        .user()
        .call(Method::GET, "/myapi/user/export", None)
        .await;
    let data = export.assert_ok();
    assert_eq!(data["profile"]["email"], "caller@example.com");
    assert!(!data["sessions"].as_array().unwrap().is_empty());
    assert_eq!(data["api_keys"].as_array().unwrap().len(), 1);
    assert_eq!(data["orders"][0]["order_no"], order_no.as_str());
    assert_eq!(data["ledger"][0]["amount"], 5000);
    assert!(data["usage"].is_array() && data["invoices"].is_array());
    let text = export.text.clone();
    assert!(!text.contains(&key) && !text.contains("password") && !text.contains("key_hash"));
    // The admin sees the same; another user cannot.
    let path = format!("/myapi/admin/users/{}/export", shop.user().id);
    let admin = shop.admin().call(Method::GET, &path, None).await;
    assert_eq!(
        admin.assert_ok()["orders"][0]["order_no"],
        order_no.as_str()
    );
    assert_eq!(shop.user().call(Method::GET, &path, None).await.status, 403);
}

#[tokio::test]
async fn a_deleted_account_is_erased_and_its_orders_and_ledger_stay() {
    let shop = shop().await;
    let (_, subscription) = active_subscription(&shop).await;
    let key = shop.user().new_key().await;
    let wrong = json!({"password": "not the password"});
    shop.user()
        .call(Method::DELETE, "/myapi/user", Some(wrong))
        .await
        .assert_error(401, Some(40111));

    let right = json!({ "password": USER_PASSWORD });
    // Stripe down: nothing is deleted.
    shop.stripe.set_failing(true);
    shop.user()
        .call(Method::DELETE, "/myapi/user", Some(right.clone()))
        .await
        .assert_error(500, Some(50023));
    shop.stripe.set_failing(false);
    shop.user()
        .call(Method::DELETE, "/myapi/user", Some(right))
        .await
        .assert_ok();

    // The subscription was cancelled at once at Stripe (asked twice: the outage, then this).
    let cancelled = shop
        .stripe
        .requests_to("DELETE", &format!("/v1/subscriptions/{subscription}"));
    assert_eq!(cancelled.len(), 2);
    // The session and the key no longer work; the address can register again.
    assert_eq!(
        shop.user()
            .call(Method::GET, "/myapi/user/profile", None)
            .await
            .status,
        401
    );
    let call = super::support::send(
        shop.app
            .request(Method::GET, "/api/v1/echo/a")
            .header("X-API-Key", &key),
    )
    .await;
    assert_eq!(call.status, 401);
    shop.login("caller@example.com", USER_PASSWORD)
        .await
        .assert_error(401, Some(40111));
    let row: (String, Option<String>, String) =
        sqlx::query_as("SELECT email, frozen_reason, password_hash FROM users WHERE id = $1")
            .bind(shop.user().id)
            .fetch_one(&shop.app.pool)
            .await
            .unwrap();
    assert_eq!(row.0, format!("deleted-{}@deleted.invalid", shop.user().id));
    assert_eq!(row.1.as_deref(), Some("deleted"));
    assert_eq!(row.2, "!");
    let kept_ips: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sessions WHERE user_id = $1 AND ip IS NOT NULL")
            .bind(shop.user().id)
            .fetch_one(&shop.app.pool)
            .await
            .unwrap();
    assert_eq!(kept_ips, 0);
    // What the accounts need stays.
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE user_id = $1")
        .bind(shop.user().id)
        .fetch_one(&shop.app.pool)
        .await
        .unwrap();
    assert_eq!(orders, 1);
    assert_ledger_consistent(&shop.app.pool).await;
    // Deleted once: an admin finds nothing more to delete.
    let path = format!("/myapi/admin/users/{}", shop.user().id);
    assert_eq!(
        shop.admin().call(Method::DELETE, &path, None).await.status,
        404
    );
    let own = format!("/myapi/admin/users/{}", shop.admin().id);
    shop.admin()
        .call(Method::DELETE, &own, None)
        .await
        .assert_error(400, None);
}
