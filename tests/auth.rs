//! Accounts over HTTP, against a real SMTP server inside the test: captcha, email codes,
//! registration, login, sessions, password reset and change.

mod support;

#[path = "auth/email_change.rs"]
mod email_change;
#[path = "auth/sessions.rs"]
mod sessions;
#[path = "auth/two_factor.rs"]
mod two_factor;

use std::time::Duration;

use chrono::Duration as Span;
use reqwest::Method;
use serde_json::{Value, json};
use support::scene::Scene;
use support::smtp::Mode;
use support::{TestApp, TestConfig, TestResponse, send};

const PASSWORD: &str = "correct horse";

/// No account yet; captchas all answer `pass`, mail goes to the test's SMTP server.
async fn accounts_with(config: TestConfig) -> Scene {
    Scene::builder()
        .without_users()
        .config(config)
        .start()
        .await
}

async fn accounts() -> Scene {
    accounts_with(TestConfig::default()).await
}

#[tokio::test]
async fn a_captcha_is_a_png_that_expires_in_five_minutes() {
    let accounts = accounts().await;
    let response = accounts.app.get("/myapi/auth/captcha").await;
    let data = response.assert_ok();
    assert_eq!(data["expires_in"], 300);
    let image = data["image"].as_str().unwrap();
    let encoded = image
        .strip_prefix("data:image/png;base64,")
        .expect("a PNG data URL");
    use base64::Engine;
    let png = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(uuid::Uuid::parse_str(data["captcha_id"].as_str().unwrap()).is_ok());
}

#[tokio::test]
async fn an_email_code_needs_a_valid_unused_captcha() {
    let accounts = accounts().await;
    let email = "ann@example.com";
    let missing = accounts
        .post("/myapi/auth/email-code", json!({"email": email}))
        .await;
    missing.assert_error(400, Some(40002));

    let captcha_id = accounts.captcha().await;
    let wrong = json!({"email": email, "captcha_id": captcha_id, "captcha": "nope"});
    accounts
        .post("/myapi/auth/email-code", wrong)
        .await
        .assert_error(400, Some(40001));
    // The wrong attempt consumed it: the right answer no longer works.
    let reused = json!({"email": email, "captcha_id": captcha_id, "captcha": "pass"});
    accounts
        .post("/myapi/auth/email-code", reused)
        .await
        .assert_error(400, Some(40001));

    let unknown = json!({"email": email, "captcha_id": uuid::Uuid::new_v4(), "captcha": "pass"});
    accounts
        .post("/myapi/auth/email-code", unknown)
        .await
        .assert_error(400, Some(40001));

    let expired = accounts.captcha().await;
    accounts.app.clock().advance(Span::seconds(301));
    let late = json!({"email": email, "captcha_id": expired, "captcha": "PASS"});
    accounts
        .post("/myapi/auth/email-code", late)
        .await
        .assert_error(400, Some(40001));

    assert!(accounts.smtp.mails().is_empty());
    assert_eq!(accounts.count("email_codes").await, 0);
}

#[tokio::test]
async fn an_email_code_is_six_digits_stored_hashed_and_sent_once_per_cooldown() {
    let accounts = accounts().await;
    let email = "bob@example.com";
    let sent = accounts.request_code(" Bob@Example.com ").await;
    let data = sent.assert_ok();
    assert_eq!(data["expires_in"], 600);
    assert_eq!(data["cooldown"], 60);

    let code = accounts.last_code(email);
    assert!(
        code.len() == 6 && code.chars().all(|c| c.is_ascii_digit()),
        "{code}"
    );
    let mail = accounts.smtp.mails_to(email).pop().unwrap();
    assert_eq!(mail.subject(), format!("Your verification code: {code}"));
    assert!(mail.data.contains("text/html"), "an HTML part");
    let stored: Vec<u8> = sqlx::query_scalar("SELECT code_hash FROM email_codes WHERE email = $1")
        .bind(email)
        .fetch_one(&accounts.app.pool)
        .await
        .unwrap();
    assert_eq!(
        stored,
        support::sha256(&format!("{email}:{code}")),
        "the code is stored as SHA-256 of the address and the code"
    );
    assert!(
        !String::from_utf8_lossy(&stored).contains(&code),
        "the code is not stored"
    );

    let again = accounts.request_code(email).await;
    again.assert_error(400, Some(40008));
    let wait: u64 = again.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    assert_eq!(accounts.smtp.mails_to(email).len(), 1);

    accounts.app.clock().advance(Span::seconds(61));
    accounts.request_code(email).await.assert_ok();
    assert_eq!(accounts.smtp.mails_to(email).len(), 2);
}

#[tokio::test]
async fn the_code_email_follows_x_lang() {
    let accounts = accounts().await;
    let captcha_id = accounts.captcha().await;
    let body = json!({"email": "zh@example.com", "captcha_id": captcha_id, "captcha": "pass"});
    let request = accounts
        .app
        .request(Method::POST, "/myapi/auth/email-code")
        .header("X-Lang", "zh");
    send(request.json(&body)).await.assert_ok();
    let mail = accounts.smtp.mails_to("zh@example.com").pop().unwrap();
    assert!(
        mail.subject().starts_with("您的验证码："),
        "{}",
        mail.subject()
    );
}

#[tokio::test]
async fn registering_creates_the_user_and_a_session() {
    let accounts = accounts().await;
    let token = accounts.register("carol@example.com", PASSWORD).await;
    assert!(token.starts_with("ses_") && token.len() > 40);

    let profile = accounts.get_as(&token, "/myapi/user/profile").await;
    let user = profile.assert_ok();
    assert_eq!(user["email"], "carol@example.com");
    assert_eq!(user["role"], "user");
    assert_eq!(user["status"], "active");
    assert!(user["id"].is_string() && user["created_at"].is_string());

    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users")
        .fetch_one(&accounts.app.pool)
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
    assert_eq!(
        accounts.count("email_codes").await,
        0,
        "the code is consumed"
    );
    let stored_token: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sessions WHERE token_hash = $1")
            .bind(support::sha256(&token))
            .fetch_one(&accounts.app.pool)
            .await
            .unwrap();
    assert_eq!(
        stored_token, 1,
        "the session is stored as the token's SHA-256"
    );
}

#[tokio::test]
async fn admin_addresses_register_as_admins() {
    let accounts =
        accounts_with(TestConfig::default().var("ADMIN_EMAILS", "Boss@Example.com")).await;
    let token = accounts.register("boss@example.com", PASSWORD).await;
    let profile = accounts.get_as(&token, "/myapi/user/profile").await;
    assert_eq!(profile.assert_ok()["role"], "admin");
}

#[tokio::test]
async fn registration_refuses_bad_passwords_codes_and_taken_addresses() {
    let accounts = accounts().await;
    let email = "dave@example.com";
    accounts.request_code(email).await.assert_ok();
    let code = accounts.last_code(email);

    let short = accounts.register_with_code(email, "12345", &code).await;
    short.assert_error(400, Some(40005));
    let long = accounts
        .register_with_code(email, &"x".repeat(129), &code)
        .await;
    long.assert_error(400, Some(40005));
    let wrong_code = if code == "000000" { "111111" } else { "000000" };
    let wrong = accounts
        .register_with_code(email, PASSWORD, wrong_code)
        .await;
    wrong.assert_error(400, Some(40004));
    accounts
        .register_with_code(email, PASSWORD, &code)
        .await
        .assert_ok();

    accounts
        .request_code(email)
        .await
        .assert_error(400, Some(40003));
    // The used code is no code: 40004, as for any address (see the next test).
    let again = accounts
        .register_with_code("DAVE@example.com", PASSWORD, &code)
        .await;
    again.assert_error(400, Some(40004));
    assert_eq!(accounts.count("users").await, 1);
}

#[tokio::test]
async fn registration_does_not_tell_a_taken_address_from_a_free_one() {
    let accounts = accounts().await;
    accounts.register("taken@example.com", PASSWORD).await;
    for email in ["taken@example.com", "free@example.com"] {
        accounts
            .register_with_code(email, PASSWORD, "123456")
            .await
            .assert_error(400, Some(40004));
    }
}

#[tokio::test]
async fn registrations_per_ip_are_throttled() {
    let accounts =
        accounts_with(TestConfig::default().var("AUTH_LOGIN_PER_IP_PER_MINUTE", "2")).await;
    for _ in 0..2 {
        accounts
            .register_with_code("someone@example.com", PASSWORD, "123456")
            .await
            .assert_error(400, Some(40004));
    }
    let third = accounts
        .register_with_code("someone@example.com", PASSWORD, "123456")
        .await;
    third.assert_error(429, None);
    assert!(third.header("retry-after").is_some());
}

#[tokio::test]
async fn a_code_expires_after_ten_minutes() {
    let accounts = accounts().await;
    let email = "erin@example.com";
    accounts.request_code(email).await.assert_ok();
    let code = accounts.last_code(email);
    accounts
        .app
        .clock()
        .advance(Span::minutes(10) + Span::seconds(1));
    let late = accounts.register_with_code(email, PASSWORD, &code).await;
    late.assert_error(400, Some(40004));
    assert_eq!(accounts.count("users").await, 0);
}

#[tokio::test]
async fn a_code_dies_after_five_wrong_tries() {
    let accounts = accounts().await;
    let email = "fred@example.com";
    accounts.request_code(email).await.assert_ok();
    let code = accounts.last_code(email);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..5 {
        let attempt = accounts.register_with_code(email, PASSWORD, wrong).await;
        attempt.assert_error(400, Some(40004));
    }
    let right = accounts.register_with_code(email, PASSWORD, &code).await;
    right.assert_error(400, Some(40004));
    assert_eq!(accounts.count("users").await, 0);
}

#[tokio::test]
async fn two_registrations_racing_with_one_code_make_one_account() {
    let accounts = accounts().await;
    let email = "gina@example.com";
    accounts.request_code(email).await.assert_ok();
    let code = accounts.last_code(email);
    let attempts = (0..8).map(|_| accounts.register_with_code(email, PASSWORD, &code));
    let responses = futures_util::future::join_all(attempts).await;
    let winners = responses.iter().filter(|r| r.status == 200).count();
    assert_eq!(winners, 1);
    for loser in responses.iter().filter(|r| r.status != 200) {
        let sub = loser.json["sub_code"].as_u64().unwrap();
        assert!(sub == 40004 || sub == 40003, "{}", loser.text);
    }
    assert_eq!(accounts.count("users").await, 1);
    assert_eq!(accounts.count("sessions").await, 1);
}

#[tokio::test]
async fn a_failed_send_answers_50011_and_blocks_nothing() {
    let accounts = accounts().await;
    let email = "hank@example.com";
    accounts.smtp.set_mode(Mode::Refuse);
    accounts
        .request_code(email)
        .await
        .assert_error(500, Some(50011));
    assert_eq!(accounts.count("email_codes").await, 0);
    assert_eq!(accounts.count("mail_cooldowns").await, 0);

    accounts.smtp.set_mode(Mode::Accept);
    accounts.request_code(email).await.assert_ok();
    assert_eq!(accounts.smtp.mails_to(email).len(), 1);
}

#[tokio::test]
async fn a_failed_reset_email_answers_50011_and_starts_no_cooldown() {
    let accounts = accounts().await;
    let email = "reset.fail@example.com";
    accounts.register(email, PASSWORD).await;
    accounts.smtp.set_mode(Mode::Refuse);
    forgot(&accounts, email)
        .await
        .assert_error(500, Some(50011));
    assert_eq!(accounts.count("password_reset_tokens").await, 0);
    assert_eq!(
        accounts
            .count("mail_cooldowns WHERE purpose <> 'email_code'")
            .await,
        0
    );

    // At once, not a cooldown later, the next request sends the link.
    accounts.smtp.set_mode(Mode::Accept);
    forgot(&accounts, email).await.assert_ok();
    assert!(!reset_token(&accounts, email).is_empty());
}

#[tokio::test]
async fn failed_logins_stop_asking_for_a_captcha_fifteen_minutes_later() {
    let accounts = accounts().await;
    let email = "window@example.com";
    accounts.register(email, PASSWORD).await;
    three_wrong_logins(&accounts, email).await;
    let clock = accounts.app.clock();
    clock.advance(Span::minutes(14) + Span::seconds(50));
    accounts
        .login(email, PASSWORD)
        .await
        .assert_error(400, Some(40002));
    clock.advance(Span::seconds(11));
    accounts.login(email, PASSWORD).await.assert_ok();
}

#[tokio::test]
async fn a_hanging_mail_server_answers_50011_within_the_timeout() {
    let accounts = accounts_with(TestConfig::default().var("MAIL_TIMEOUT_SECS", "1")).await;
    accounts.smtp.set_mode(Mode::Hang);
    let started = std::time::Instant::now();
    accounts
        .request_code("ivy@example.com")
        .await
        .assert_error(500, Some(50011));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(accounts.count("mail_cooldowns").await, 0);
}

#[tokio::test]
async fn sends_per_ip_are_capped() {
    let accounts =
        accounts_with(TestConfig::default().var("AUTH_SENDS_PER_IP_PER_HOUR", "2")).await;
    accounts.request_code("a1@example.com").await.assert_ok();
    accounts.request_code("a2@example.com").await.assert_ok();
    let third = accounts.request_code("a3@example.com").await;
    third.assert_error(429, None);
    assert!(third.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    assert!(accounts.smtp.mails_to("a3@example.com").is_empty());
}

#[tokio::test]
async fn login_gives_unknown_addresses_and_wrong_passwords_the_same_answer() {
    let accounts = accounts().await;
    accounts.register("jill@example.com", PASSWORD).await;
    let good = accounts.login("JILL@example.com", PASSWORD).await;
    let data = good.assert_ok();
    assert_eq!(data["user"]["email"], "jill@example.com");
    assert!(data["token"].as_str().unwrap().starts_with("ses_"));
    assert!(data["expires_at"].is_string());

    let wrong = accounts.login("jill@example.com", "not the password").await;
    let unknown = accounts
        .login("nobody@example.com", "not the password")
        .await;
    wrong.assert_error(401, Some(40111));
    unknown.assert_error(401, Some(40111));
    let strip = |mut body: Value| {
        body.as_object_mut().unwrap().remove("request_id");
        body
    };
    assert_eq!(strip(wrong.json.clone()), strip(unknown.json.clone()));
}

#[tokio::test]
async fn three_failed_logins_require_a_captcha() {
    let accounts = accounts().await;
    let email = "kate@example.com";
    accounts.register(email, PASSWORD).await;
    three_wrong_logins(&accounts, email).await;
    accounts
        .login(email, PASSWORD)
        .await
        .assert_error(400, Some(40002));
    let captcha_id = accounts.captcha().await;
    let wrong =
        json!({"email": email, "password": PASSWORD, "captcha_id": captcha_id, "captcha": "x"});
    accounts
        .post("/myapi/auth/login", wrong)
        .await
        .assert_error(400, Some(40001));
    let captcha_id = accounts.captcha().await;
    let right =
        json!({"email": email, "password": PASSWORD, "captcha_id": captcha_id, "captcha": "pass"});
    accounts.post("/myapi/auth/login", right).await.assert_ok();

    // The IP alone also counts: another address from the same client needs a captcha too.
    accounts
        .login("other@example.com", "whatever1")
        .await
        .assert_error(400, Some(40002));
}

#[tokio::test]
async fn logins_per_ip_are_throttled() {
    let accounts =
        accounts_with(TestConfig::default().var("AUTH_LOGIN_PER_IP_PER_MINUTE", "2")).await;
    accounts
        .login("x@example.com", "whatever1")
        .await
        .assert_error(401, Some(40111));
    accounts
        .login("x@example.com", "whatever1")
        .await
        .assert_error(401, Some(40111));
    let third = accounts.login("x@example.com", "whatever1").await;
    third.assert_error(429, None);
    assert!(third.header("retry-after").is_some());
}

/// Behind a trusted proxy every customer keeps a throttle of their own; without one, the
/// header a client sends changes nothing.
#[tokio::test]
async fn behind_a_trusted_proxy_each_client_has_its_own_login_throttle() {
    let login_from = |app: &TestApp, forwarded: &str| {
        let body = json!({"email": "x@example.com", "password": "whatever1"});
        send(
            app.request(Method::POST, "/myapi/auth/login")
                .header("X-Forwarded-For", forwarded)
                .json(&body),
        )
    };
    let config = || TestConfig::default().var("AUTH_LOGIN_PER_IP_PER_MINUTE", "2");
    let proxied = accounts_with(config().var("TRUSTED_PROXIES", "127.0.0.1/32")).await;
    for _ in 0..2 {
        login_from(&proxied.app, "203.0.113.5")
            .await
            .assert_error(401, Some(40111));
    }
    login_from(&proxied.app, "203.0.113.5")
        .await
        .assert_error(429, None);
    // A hop the client wrote itself, left of the proxy's, does not make it someone else.
    login_from(&proxied.app, "198.51.100.77, 203.0.113.5")
        .await
        .assert_error(429, None);
    login_from(&proxied.app, "203.0.113.6")
        .await
        .assert_error(401, Some(40111));

    let direct = accounts_with(config()).await;
    for forwarded in ["203.0.113.5", "203.0.113.6"] {
        login_from(&direct.app, forwarded)
            .await
            .assert_error(401, Some(40111));
    }
    login_from(&direct.app, "203.0.113.7")
        .await
        .assert_error(429, None);
}

#[tokio::test]
async fn a_frozen_account_cannot_log_in_or_use_its_session() {
    let accounts = accounts().await;
    let email = "liam@example.com";
    let token = accounts.register(email, PASSWORD).await;
    sqlx::query("UPDATE users SET status = 'frozen' WHERE email = $1")
        .bind(email)
        .execute(&accounts.app.pool)
        .await
        .unwrap();
    accounts
        .login(email, PASSWORD)
        .await
        .assert_error(403, Some(40301));
    accounts
        .get_as(&token, "/myapi/user/profile")
        .await
        .assert_error(403, Some(40301));
    // A frozen account's wrong password is still just a wrong password.
    accounts
        .login(email, "wrong password")
        .await
        .assert_error(401, Some(40111));
}

#[tokio::test]
async fn sessions_end_on_logout_expiry_and_user_deletion() {
    let accounts = accounts().await;
    let email = "mia@example.com";
    let token = accounts.register(email, PASSWORD).await;

    accounts
        .app
        .get("/myapi/user/profile")
        .await
        .assert_error(401, Some(40101));
    accounts
        .get_as("ses_forged", "/myapi/user/profile")
        .await
        .assert_error(401, Some(40101));
    accounts
        .get_as("garbage", "/myapi/user/profile")
        .await
        .assert_error(401, Some(40101));

    let second = accounts.login(email, PASSWORD).await.assert_ok()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    accounts
        .post_as(&token, "/myapi/auth/logout", json!(null))
        .await
        .assert_ok();
    accounts
        .get_as(&token, "/myapi/user/profile")
        .await
        .assert_error(401, Some(40101));
    accounts
        .post_as(&token, "/myapi/auth/logout", json!(null))
        .await
        .assert_error(401, Some(40101));
    accounts
        .get_as(&second, "/myapi/user/profile")
        .await
        .assert_ok();

    accounts
        .app
        .clock()
        .advance(Span::hours(168) + Span::seconds(1));
    accounts
        .get_as(&second, "/myapi/user/profile")
        .await
        .assert_error(401, Some(40101));

    let third = accounts.login(email, PASSWORD).await.assert_ok()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    sqlx::query("DELETE FROM users")
        .execute(&accounts.app.pool)
        .await
        .unwrap();
    accounts
        .get_as(&third, "/myapi/user/profile")
        .await
        .assert_error(404, Some(40402));
}

/// Three wrong passwords for `email`, each answered 40111: what makes login ask for a captcha.
async fn three_wrong_logins(accounts: &Scene, email: &str) {
    for _ in 0..3 {
        accounts
            .login(email, "wrong password")
            .await
            .assert_error(401, Some(40111));
    }
}

/// The reset token of the last reset mail sent to `email`.
fn reset_token(accounts: &Scene, email: &str) -> String {
    let mail = accounts.smtp.mails_to(email).pop().expect("a reset mail");
    let text = mail.decoded();
    assert!(text.contains("https://app.example.com/reset-password?token="));
    support::reset_token(&text)
}

async fn forgot(accounts: &Scene, email: &str) -> TestResponse {
    let captcha_id = accounts.captcha().await;
    let body = json!({"email": email, "captcha_id": captcha_id, "captcha": "pass"});
    accounts.post("/myapi/auth/password/forgot", body).await
}

#[tokio::test]
async fn a_reset_link_sets_a_new_password_once_and_ends_every_session() {
    let accounts = accounts().await;
    let email = "nina@example.com";
    let session = accounts.register(email, PASSWORD).await;

    let missing = accounts
        .post("/myapi/auth/password/forgot", json!({"email": email}))
        .await;
    missing.assert_error(400, Some(40002));
    forgot(&accounts, "ghost@example.com")
        .await
        .assert_error(404, Some(40401));

    let sent = forgot(&accounts, email).await;
    assert_eq!(sent.assert_ok()["expires_in"], 1800);
    let token = reset_token(&accounts, email);
    assert!(token.len() >= 43, "{token}");
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM password_reset_tokens WHERE token_hash = $1")
            .bind(support::sha256(&token))
            .fetch_one(&accounts.app.pool)
            .await
            .unwrap();
    assert_eq!(stored, 1, "the reset token is stored as its SHA-256");
    forgot(&accounts, email)
        .await
        .assert_error(400, Some(40008));

    let short = json!({"token": token, "password": "short"});
    accounts
        .post("/myapi/auth/password/reset", short)
        .await
        .assert_error(400, Some(40005));
    let reset = json!({"token": token, "password": "a brand new one"});
    accounts
        .post("/myapi/auth/password/reset", reset.clone())
        .await
        .assert_ok();
    accounts
        .post("/myapi/auth/password/reset", reset)
        .await
        .assert_error(400, Some(40006));
    let unknown = json!({"token": "not-a-token", "password": "a brand new one"});
    accounts
        .post("/myapi/auth/password/reset", unknown)
        .await
        .assert_error(400, Some(40006));

    accounts
        .get_as(&session, "/myapi/user/profile")
        .await
        .assert_error(401, Some(40101));
    accounts
        .login(email, PASSWORD)
        .await
        .assert_error(401, Some(40111));
    accounts.login(email, "a brand new one").await.assert_ok();
    let notice = accounts.smtp.mails_to(email).pop().unwrap();
    assert_eq!(notice.subject(), "Your password was changed");
}

#[tokio::test]
async fn a_reset_link_expires_after_thirty_minutes() {
    let accounts = accounts().await;
    let email = "olga@example.com";
    accounts.register(email, PASSWORD).await;
    forgot(&accounts, email).await.assert_ok();
    let token = reset_token(&accounts, email);
    accounts
        .app
        .clock()
        .advance(Span::minutes(30) + Span::seconds(1));
    let late = json!({"token": token, "password": "a brand new one"});
    accounts
        .post("/myapi/auth/password/reset", late)
        .await
        .assert_error(400, Some(40006));
}

#[tokio::test]
async fn racing_resets_with_one_token_succeed_once() {
    let accounts = accounts().await;
    let email = "pete@example.com";
    accounts.register(email, PASSWORD).await;
    forgot(&accounts, email).await.assert_ok();
    let token = reset_token(&accounts, email);
    let attempts = (0..6).map(|i| {
        accounts.post(
            "/myapi/auth/password/reset",
            json!({"token": token, "password": format!("new password {i}")}),
        )
    });
    let responses = futures_util::future::join_all(attempts).await;
    assert_eq!(responses.iter().filter(|r| r.status == 200).count(), 1);
    for loser in responses.iter().filter(|r| r.status != 200) {
        loser.assert_error(400, Some(40006));
    }
}

#[tokio::test]
async fn changing_the_password_needs_the_old_one_and_ends_the_other_sessions() {
    let accounts = accounts().await;
    let email = "quinn@example.com";
    let first = accounts.register(email, PASSWORD).await;
    let second = accounts.login(email, PASSWORD).await.assert_ok()["token"]
        .as_str()
        .unwrap()
        .to_owned();

    let wrong = json!({"old_password": "not it at all", "new_password": "another secret"});
    accounts
        .post_as(&first, "/myapi/auth/password/change", wrong)
        .await
        .assert_error(401, Some(40111));
    let short = json!({"old_password": PASSWORD, "new_password": "tiny"});
    accounts
        .post_as(&first, "/myapi/auth/password/change", short)
        .await
        .assert_error(400, Some(40005));
    let anonymous = json!({"old_password": PASSWORD, "new_password": "another secret"});
    accounts
        .post("/myapi/auth/password/change", anonymous.clone())
        .await
        .assert_error(401, Some(40101));

    accounts
        .post_as(&first, "/myapi/auth/password/change", anonymous)
        .await
        .assert_ok();
    accounts
        .get_as(&first, "/myapi/user/profile")
        .await
        .assert_ok();
    accounts
        .get_as(&second, "/myapi/user/profile")
        .await
        .assert_error(401, Some(40101));
    accounts.login(email, "another secret").await.assert_ok();
    assert_eq!(
        accounts.smtp.mails_to(email).pop().unwrap().subject(),
        "Your password was changed"
    );
}

#[tokio::test]
async fn a_hash_made_with_other_parameters_is_upgraded_at_login() {
    let accounts = accounts().await;
    let email = "rita@example.com";
    accounts.register(email, PASSWORD).await;
    let old = support::argon2_hash(PASSWORD, 128, 2);
    sqlx::query("UPDATE users SET password_hash = $1")
        .bind(&old)
        .execute(&accounts.app.pool)
        .await
        .unwrap();
    accounts.login(email, PASSWORD).await.assert_ok();
    let now: String = sqlx::query_scalar("SELECT password_hash FROM users")
        .fetch_one(&accounts.app.pool)
        .await
        .unwrap();
    assert!(now.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{now}");
}

#[tokio::test]
async fn bad_input_on_every_field_answers_400_and_writes_nothing() {
    let accounts = accounts().await;
    let cases = [
        ("/myapi/auth/email-code", json!({})),
        ("/myapi/auth/email-code", json!({"email": 5})),
        ("/myapi/auth/email-code", json!({"email": "not-an-address"})),
        (
            "/myapi/auth/email-code",
            json!({"email": format!("{}@example.com", "a".repeat(300))}),
        ),
        (
            "/myapi/auth/email-code",
            json!({"email": "a@example.com", "captcha": 7}),
        ),
        (
            "/myapi/auth/register",
            json!({"email": "a@example.com", "password": "secret1"}),
        ),
        (
            "/myapi/auth/register",
            json!({"email": "a@example.com", "password": 123456, "email_code": "1"}),
        ),
        (
            "/myapi/auth/register",
            json!({"email": "x'); DROP TABLE users;--", "password": "secret1", "email_code": "1"}),
        ),
        ("/myapi/auth/login", json!({"email": "a@example.com"})),
        (
            "/myapi/auth/login",
            json!({"email": ["a@example.com"], "password": "secret1"}),
        ),
        ("/myapi/auth/password/forgot", json!({"email": null})),
        ("/myapi/auth/password/reset", json!({"password": "secret1"})),
        (
            "/myapi/auth/password/reset",
            json!({"token": {}, "password": "secret1"}),
        ),
    ];
    for (path, body) in cases {
        let response = accounts.post(path, body.clone()).await;
        response.assert_error(400, None);
        assert!(
            response.json["msg"].as_str().unwrap().contains("field")
                || response.json["msg"].as_str().unwrap().contains("email"),
            "{path} {body}: {}",
            response.text
        );
    }
    for table in [
        "users",
        "sessions",
        "email_codes",
        "mail_cooldowns",
        "password_reset_tokens",
    ] {
        assert_eq!(accounts.count(table).await, 0, "{table}");
    }
    assert!(accounts.smtp.mails().is_empty());
}

#[tokio::test]
async fn the_login_throttle_is_shared_through_redis() {
    let Some(redis_url) = support::redis_url("the_login_throttle_is_shared_through_redis") else {
        return;
    };
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    let config = || {
        TestConfig::default()
            .var("REDIS_URL", redis_url.clone())
            .var("REDIS_KEY_PREFIX", prefix.clone())
            .var("AUTH_LOGIN_PER_IP_PER_MINUTE", "3")
    };
    let first = accounts_with(config()).await;
    let second = accounts_with(config()).await;
    // Three logins across the two instances use up the shared limit; the fourth is refused
    // by whichever instance it reaches.
    first
        .login("x@example.com", "whatever1")
        .await
        .assert_error(401, Some(40111));
    second
        .login("x@example.com", "whatever1")
        .await
        .assert_error(401, Some(40111));
    first
        .login("x@example.com", "whatever1")
        .await
        .assert_error(401, Some(40111));
    second
        .login("x@example.com", "whatever1")
        .await
        .assert_error(429, None);
}

/// The guard comes before the input: a caller who may not use a route is refused without its
/// body, query or path being read, so a refusal tells nothing about what the route expects.
#[tokio::test]
async fn authorization_is_decided_before_any_input_is_validated() {
    let app = support::spawn_app_with(TestConfig::default().cheap_hashing()).await;
    let (_, user) = support::create_user(&app, "plain@example.com", "user").await;
    let (_, admin) = support::create_user(&app, "boss@example.com", "admin").await;
    let malformed = || serde_json::json!({"unexpected": true});
    let admin_routes = [
        (Method::POST, "/myapi/admin/plans"),
        (Method::PUT, "/myapi/admin/plans/not-a-number"),
        (Method::DELETE, "/myapi/admin/plans/not-a-number"),
        (Method::POST, "/myapi/admin/providers"),
        (Method::PUT, "/myapi/admin/providers/x"),
        (Method::GET, "/myapi/admin/users?page=0"),
        (Method::POST, "/myapi/admin/users/not-a-uuid/freeze"),
        (Method::POST, "/myapi/admin/users/not-a-uuid/credits"),
        (Method::POST, "/myapi/admin/orders"),
    ];
    for (method, path) in &admin_routes {
        let refused = send(
            app.request(method.clone(), path)
                .bearer_auth(&user)
                .json(&malformed()),
        )
        .await;
        refused.assert_error(403, None);
        let anonymous = send(app.request(method.clone(), path).json(&malformed())).await;
        anonymous.assert_error(401, Some(40101));
    }
    let session_routes = [
        (Method::POST, "/myapi/keys"),
        (Method::GET, "/myapi/keys?page_size=1000"),
        (Method::DELETE, "/myapi/keys/not-a-uuid"),
        (Method::GET, "/myapi/usage?granularity=week"),
        (Method::POST, "/myapi/orders"),
        (Method::GET, "/myapi/orders?page=0"),
        (Method::POST, "/myapi/orders/x/cancel"),
        (Method::GET, "/myapi/credits/ledger?page=0"),
        (Method::POST, "/myapi/auth/password/change"),
    ];
    for (method, path) in &session_routes {
        let body = send(
            app.request(method.clone(), path)
                .header("content-type", "application/json")
                .body("{not json"),
        )
        .await;
        body.assert_error(401, Some(40101));
    }
    // With the right to use it, the same input is validated and the field named.
    let checked = send(
        app.request(Method::POST, "/myapi/admin/plans")
            .bearer_auth(&admin)
            .json(&malformed()),
    )
    .await;
    checked.assert_error(400, None);
    assert!(
        checked.json["msg"].as_str().unwrap().contains("field"),
        "{}",
        checked.text
    );
}

/// Concurrent wrong logins cannot all pass the captcha rule before any failure is written: of
/// eight at once, at most three are judged without a captcha.
#[tokio::test]
async fn concurrent_wrong_logins_meet_the_captcha_after_three() {
    let accounts = accounts().await;
    accounts.register("target@example.com", PASSWORD).await;
    let attempts = (0..8).map(|_| accounts.login("target@example.com", "not the password"));
    let answers = futures_util::future::join_all(attempts).await;
    let judged = answers
        .iter()
        .filter(|answer| answer.json["sub_code"] == 40111)
        .count();
    let captcha = answers
        .iter()
        .filter(|answer| answer.json["sub_code"] == 40002)
        .count();
    assert_eq!(
        judged + captcha,
        8,
        "{:?}",
        answers.iter().map(|a| &a.text).collect::<Vec<_>>()
    );
    assert!(
        judged <= 3,
        "{judged} wrong passwords were judged without a captcha"
    );
}

/// After a reset or a change, no reset link sent before works: whoever took the account over
/// cannot come back through an older mail.
#[tokio::test]
async fn a_reset_or_a_change_revokes_every_older_reset_link() {
    let accounts = accounts().await;
    let email = "olga@example.com";
    accounts.register(email, PASSWORD).await;
    let reset = |token: String, password: &'static str| {
        accounts.post(
            "/myapi/auth/password/reset",
            json!({"token": token, "password": password}),
        )
    };

    forgot(&accounts, email).await.assert_ok();
    let older = reset_token(&accounts, email);
    accounts.app.clock().advance(Span::seconds(61));
    forgot(&accounts, email).await.assert_ok();
    let newer = reset_token(&accounts, email);
    assert_ne!(older, newer);
    reset(newer, "new password 1").await.assert_ok();
    reset(older, "takeover pass")
        .await
        .assert_error(400, Some(40006));

    accounts.app.clock().advance(Span::seconds(61));
    forgot(&accounts, email).await.assert_ok();
    let before_change = reset_token(&accounts, email);
    let session = accounts.login(email, "new password 1").await.assert_ok()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    accounts
        .post_as(
            &session,
            "/myapi/auth/password/change",
            json!({"old_password": "new password 1", "new_password": "new password 2"}),
        )
        .await
        .assert_ok();
    reset(before_change, "takeover pass")
        .await
        .assert_error(400, Some(40006));
}

/// Expired and ended records are removed by the housekeeping job; live ones stay.
#[tokio::test]
async fn housekeeping_removes_what_expired_and_keeps_what_is_live() {
    let accounts =
        accounts_with(TestConfig::default().var("HOUSEKEEPING_INTERVAL_SECS", "1")).await;
    let pool = &accounts.app.pool;
    let live_session = accounts.register("kept@example.com", PASSWORD).await;
    let counts = || async {
        let mut counts = Vec::new();
        for table in [
            "sessions",
            "password_reset_tokens",
            "captchas",
            "email_codes",
            "mail_cooldowns",
            "login_failures",
            "known_devices",
        ] {
            counts.push(accounts.count(table).await);
        }
        counts
    };
    // What the registration left is live and stays.
    let before = counts().await;
    let old = chrono::Utc::now() - Span::days(2);
    let later = chrono::Utc::now() + Span::hours(1);
    let user_id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM users")
        .fetch_one(pool)
        .await
        .unwrap();
    for statement in [
        "INSERT INTO sessions (user_id, token_hash, created_at, expires_at) VALUES ($1, 'expired', $2, $2)",
        "INSERT INTO sessions (user_id, token_hash, created_at, expires_at, revoked_at) VALUES ($1, 'ended', $2, $3, $2)",
        "INSERT INTO password_reset_tokens (token_hash, user_id, created_at, expires_at) VALUES ('old', $1, $2, $2)",
        "INSERT INTO password_reset_tokens (token_hash, user_id, created_at, expires_at) VALUES ('live', $1, $2, $3)",
    ] {
        sqlx::query(statement)
            .bind(user_id)
            .bind(old)
            .bind(later)
            .execute(pool)
            .await
            .unwrap();
    }
    for statement in [
        "INSERT INTO captchas (id, answer, expires_at) VALUES (gen_random_uuid(), 'x', $1)",
        "INSERT INTO captchas (id, answer, expires_at) VALUES (gen_random_uuid(), 'y', $2)",
        "INSERT INTO email_codes (email, code_hash, expires_at, created_at) VALUES ('gone@example.com', 'h', $1, $1)",
        "INSERT INTO mail_cooldowns (email, purpose, sent_at) VALUES ('gone@example.com', 'email_code', $1)",
        "INSERT INTO login_failures (subject, failed_at) VALUES ('ip:192.0.2.1', $1)",
        "INSERT INTO login_failures (subject, failed_at) VALUES ('ip:192.0.2.2', $2)",
    ] {
        sqlx::query(statement)
            .bind(old)
            .bind(later)
            .execute(pool)
            .await
            .unwrap();
    }
    // A device last used 91 days ago, and one used yesterday.
    for (fingerprint, days) in [("stale", 91), ("recent", 1)] {
        sqlx::query(
            "INSERT INTO known_devices (user_id, fingerprint, last_seen_at) \
             VALUES ($1, $2::bytea, now() - make_interval(days => $3))",
        )
        .bind(user_id)
        .bind(fingerprint.as_bytes())
        .bind(days)
        .execute(pool)
        .await
        .unwrap();
    }
    // Left beside what was there: the live token, the live captcha, the live failure, the
    // recent device.
    let expected: Vec<i64> = before
        .iter()
        .zip([0, 1, 1, 0, 0, 1, 1])
        .map(|(before, live)| before + live)
        .collect();
    support::eventually(
        Duration::from_secs(10),
        "the housekeeping round",
        || async { (counts().await == expected).then_some(()) },
    )
    .await;
    accounts
        .get_as(&live_session, "/myapi/user/profile")
        .await
        .assert_ok();
}

/// Wrong codes are counted per address and day across re-sends: a new code does not give a
/// guesser five fresh tries.
#[tokio::test]
async fn wrong_codes_are_capped_per_address_per_day_across_resends() {
    let accounts =
        accounts_with(TestConfig::default().var("AUTH_CODE_GUESSES_PER_ADDRESS_PER_DAY", "3"))
            .await;
    let email = "guessed@example.com";
    accounts.request_code(email).await.assert_ok();
    let code = accounts.last_code(email);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..3 {
        accounts
            .register_with_code(email, PASSWORD, wrong)
            .await
            .assert_error(400, Some(40004));
    }
    accounts.app.clock().advance(Span::seconds(61));
    accounts.request_code(email).await.assert_ok();
    let fresh = accounts.last_code(email);
    let refused = accounts.register_with_code(email, PASSWORD, &fresh).await;
    refused.assert_error(429, None);
    assert!(refused.header("retry-after").is_some());
    assert_eq!(accounts.count("users").await, 0);
    // Another address is not affected.
    accounts.request_code("other@example.com").await.assert_ok();
    let other = accounts.last_code("other@example.com");
    accounts
        .register_with_code("other@example.com", PASSWORD, &other)
        .await
        .assert_ok();
}

/// Wrong old passwords count like failed logins: past three a minute the change answers 429
/// without any Argon2 work, so a session can neither guess its password nor flood the hashing.
#[tokio::test]
async fn wrong_old_passwords_are_limited_like_failed_logins() {
    let accounts = accounts().await;
    let token = accounts.register("pat@example.com", PASSWORD).await;
    let change = |old: &'static str| {
        accounts.post_as(
            &token,
            "/myapi/auth/password/change",
            json!({"old_password": old, "new_password": "a new password"}),
        )
    };
    for _ in 0..3 {
        change("not it").await.assert_error(401, Some(40111));
    }
    let limited = change("not it").await;
    limited.assert_error(429, None);
    assert!(limited.header("retry-after").is_some());
    // Even the right one waits: the limit is not an oracle.
    change(PASSWORD).await.assert_error(429, None);
}
