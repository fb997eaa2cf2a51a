//! The user's sessions (issue 14 points 2 and 4): listed with where they were opened, ended one
//! by one or all but the current one, and a sign-in from a new address and browser emailed.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::support::scene::Scene;
use super::support::{TestResponse, eventually, send};

const EMAIL: &str = "traveller@example.com";
const PASSWORD: &str = "a long password";

impl Scene {
    /// Logs in with a browser of its own, from the test's loopback address.
    async fn login_with_agent(&self, agent: &str) -> String {
        let request = self
            .app
            .request(Method::POST, "/myapi/auth/login")
            .header("User-Agent", agent)
            .json(&json!({"email": EMAIL, "password": PASSWORD}));
        let response = send(request).await;
        response.assert_ok()["token"].as_str().unwrap().to_owned()
    }

    async fn sessions(&self, token: &str) -> Vec<Value> {
        let list: TestResponse = self.get_as(token, "/myapi/auth/sessions").await;
        list.assert_ok()["items"].as_array().unwrap().clone()
    }
}

#[tokio::test]
async fn sessions_are_listed_and_ended_by_their_owner() {
    let scene = Scene::builder().without_users().start().await;
    let first = scene.register(EMAIL, PASSWORD).await;
    let second = scene.login_with_agent("Firefox/140.0").await;
    let third = scene.login_with_agent("curl/8.0").await;

    let sessions = scene.sessions(&second).await;
    assert_eq!(sessions.len(), 3);
    let current: Vec<&Value> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["user_agent"], "Firefox/140.0");
    assert_eq!(current[0]["ip"], "127.0.0.1");
    assert!(current[0]["last_seen_at"].is_string());

    // One ended by id; another user's session cannot be named.
    let curl = sessions
        .iter()
        .find(|s| s["user_agent"] == "curl/8.0")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/myapi/auth/sessions/{curl}");
    let other = scene.register("stranger@example.com", PASSWORD).await;
    let theirs = send(scene.app.request(Method::DELETE, &path).bearer_auth(&other)).await;
    assert_eq!(theirs.status, 404);
    let ended = send(
        scene
            .app
            .request(Method::DELETE, &path)
            .bearer_auth(&second),
    )
    .await;
    ended.assert_ok();
    assert_eq!(
        scene.get_as(&third, "/myapi/user/profile").await.status,
        401
    );

    // All the others: only the current one stays.
    scene
        .post_as(&second, "/myapi/auth/sessions/revoke-others", json!({}))
        .await
        .assert_ok();
    assert_eq!(
        scene.get_as(&first, "/myapi/user/profile").await.status,
        401
    );
    let left = scene.sessions(&second).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["current"], true);
}

#[tokio::test]
async fn a_sign_in_from_a_new_browser_is_emailed_and_a_known_one_is_not() {
    let scene = Scene::builder().without_users().start().await;
    scene.register(EMAIL, PASSWORD).await;
    let registration_mails = scene.smtp.mails_to(EMAIL).len();
    // The browser of the registration (reqwest's default, no agent) is known.
    let same = scene.login(EMAIL, PASSWORD).await;
    same.assert_ok();
    scene
        .login_with_agent("Mozilla/5.0 (X11; Linux) Safari/605")
        .await;
    let alert = eventually(Duration::from_secs(10), "the sign-in alert", || async {
        let mails = scene.smtp.mails_to(EMAIL);
        (mails.len() > registration_mails).then(|| mails[registration_mails].clone())
    })
    .await;
    assert!(
        alert.subject().contains("New sign-in"),
        "{}",
        alert.subject()
    );
    let text = alert.text();
    assert!(
        text.contains("127.0.0.1") && text.contains("Safari/605"),
        "{text}"
    );
    // Again from it: known now, no second alert.
    scene
        .login_with_agent("Mozilla/5.0 (X11; Linux) Safari/605")
        .await;
    eventually(Duration::from_secs(10), "an empty outbox", || async {
        (scene.count("mail_outbox").await == 0).then_some(())
    })
    .await;
    assert_eq!(scene.smtp.mails_to(EMAIL).len(), registration_mails + 1);
    // No email address or agent is kept in clear for the devices.
    let devices = scene.count("known_devices").await;
    assert_eq!(devices, 2);
}
