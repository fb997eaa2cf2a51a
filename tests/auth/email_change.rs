//! Changing the account's address (issue 14 point 3).

use std::time::Duration;

use serde_json::json;

use super::support::eventually;
use super::support::scene::Scene;

const OLD: &str = "before@example.com";
const NEW: &str = "after@example.com";
const PASSWORD: &str = "a long password";

#[tokio::test]
async fn the_address_changes_with_a_code_sent_to_it_and_the_old_one_is_told() {
    let scene = Scene::builder().without_users().start().await;
    let current = scene.register(OLD, PASSWORD).await;
    let other = scene.login(OLD, PASSWORD).await;
    let other = other.assert_ok()["token"].as_str().unwrap().to_owned();

    let captcha = scene.captcha().await;
    let ask = json!({"new_email": NEW, "captcha_id": captcha, "captcha": "pass"});
    let sent = scene.post_as(&current, "/myapi/user/email/code", ask).await;
    assert_eq!(sent.assert_ok()["expires_in"], 600);
    let code = scene.last_code(NEW);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    scene
        .post_as(
            &current,
            "/myapi/user/email",
            json!({"new_email": NEW, "email_code": wrong}),
        )
        .await
        .assert_error(400, Some(40004));
    let changed = scene
        .post_as(
            &current,
            "/myapi/user/email",
            json!({"new_email": NEW, "email_code": code}),
        )
        .await;
    assert_eq!(changed.assert_ok()["email"], NEW);
    // The code works once.
    scene
        .post_as(
            &current,
            "/myapi/user/email",
            json!({"new_email": NEW, "email_code": code}),
        )
        .await
        .assert_error(400, Some(40004));

    // Other sessions ended; this one lives; the new address logs in, the old does not.
    assert_eq!(
        scene.get_as(&other, "/myapi/user/profile").await.status,
        401
    );
    scene
        .get_as(&current, "/myapi/user/profile")
        .await
        .assert_ok();
    scene.login(NEW, PASSWORD).await.assert_ok();
    scene
        .login(OLD, PASSWORD)
        .await
        .assert_error(401, Some(40111));
    let notice = eventually(Duration::from_secs(10), "the old address told", || async {
        scene
            .smtp
            .mails_to(OLD)
            .into_iter()
            .find(|mail| mail.subject().contains("email address was changed"))
    })
    .await;
    assert!(
        notice.text().contains("a***@example.com"),
        "{}",
        notice.text()
    );
}

#[tokio::test]
async fn an_address_with_an_account_cannot_be_taken() {
    let scene = Scene::builder().without_users().start().await;
    let current = scene.register(OLD, PASSWORD).await;
    scene.register(NEW, PASSWORD).await;
    let captcha = scene.captcha().await;
    let ask = json!({"new_email": NEW, "captcha_id": captcha, "captcha": "pass"});
    scene
        .post_as(&current, "/myapi/user/email/code", ask)
        .await
        .assert_error(400, Some(40003));
}
