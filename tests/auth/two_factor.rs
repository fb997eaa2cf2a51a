//! Two-factor sign-in (issue 14 point 1): enrolment, the login ticket and its second step, a
//! code accepted once, recovery codes used once, and disabling with password and code.

use serde_json::json;

use super::support::TestResponse;
use super::support::scene::Scene;

const EMAIL: &str = "careful@example.com";
const PASSWORD: &str = "a long password";

/// The authenticator: codes from the enrolled secret, computed here with the RFC's algorithm.
fn code_at(secret: &str, time: u64) -> String {
    let secret = totp_rs::Secret::try_from_base32(secret).unwrap();
    let totp = totp_rs::Builder::new().with_secret(secret).build().unwrap();
    totp.generate(time).to_string()
}

fn now() -> u64 {
    chrono::Utc::now().timestamp() as u64
}

impl Scene {
    async fn second_step(&self, ticket: &str, code: &str) -> TestResponse {
        let body = json!({"ticket": ticket, "code": code});
        self.post("/myapi/auth/login/2fa", body).await
    }

    /// The second step with a solved captcha (needed past three failures from the address).
    async fn second_step_with_captcha(&self, ticket: &str, code: &str) -> TestResponse {
        let captcha = self.captcha().await;
        let body = json!({"ticket": ticket, "code": code, "captcha_id": captcha,
            "captcha": "pass"});
        self.post("/myapi/auth/login/2fa", body).await
    }

    async fn ticket(&self) -> String {
        let login = self.login(EMAIL, PASSWORD).await;
        let data = login.assert_ok();
        assert_eq!(data["mfa_required"], true, "{data}");
        assert!(data.get("token").is_none());
        assert_eq!(data["expires_in"], 300);
        data["ticket"].as_str().unwrap().to_owned()
    }
}

/// Enrols `token`'s account; returns the secret and the recovery codes.
async fn enrol(scene: &Scene, token: &str) -> (String, Vec<String>) {
    let setup = scene
        .post_as(token, "/myapi/auth/2fa/setup", json!({}))
        .await;
    let data = setup.assert_ok().clone();
    let secret = data["secret"].as_str().unwrap().to_owned();
    assert!(
        data["otpauth_uri"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/meterapi:")
    );
    assert!(
        data["qr"]
            .as_str()
            .unwrap()
            .starts_with("data:image/png;base64,")
    );
    // A wrong first code does not enable it.
    let previous = code_at(&secret, now() - 300);
    scene
        .post_as(token, "/myapi/auth/2fa/enable", json!({ "code": previous }))
        .await
        .assert_error(400, Some(40009));
    let enabled = scene
        .post_as(
            token,
            "/myapi/auth/2fa/enable",
            json!({ "code": code_at(&secret, now()) }),
        )
        .await;
    let codes: Vec<String> = enabled.assert_ok()["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|code| code.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 10);
    (secret, codes)
}

#[tokio::test]
async fn an_enrolled_login_needs_a_code_accepted_once() {
    let scene = Scene::builder().without_users().start().await;
    let token = scene.register(EMAIL, PASSWORD).await;
    let (secret, recovery) = enrol(&scene, &token).await;

    // The enabling code's step is used: the next login needs the next step's code.
    let ticket = scene.ticket().await;
    scene
        .second_step(&ticket, "123")
        .await
        .assert_error(400, Some(40009));
    scene
        .second_step("mt_forged", &code_at(&secret, now()))
        .await
        .assert_error(400, Some(40009));
    let next = code_at(&secret, now() + 30);
    let signed_in = scene.second_step(&ticket, &next).await;
    let session = signed_in.assert_ok()["token"].as_str().unwrap().to_owned();
    scene
        .get_as(&session, "/myapi/user/profile")
        .await
        .assert_ok();
    // The ticket is used, and the same code again is refused (a replay within its window).
    scene
        .second_step(&ticket, &next)
        .await
        .assert_error(400, Some(40009));
    let again = scene.ticket().await;
    scene
        .second_step(&again, &next)
        .await
        .assert_error(400, Some(40009));

    // A recovery code works once.
    let recovered = scene.second_step(&again, &recovery[0]).await;
    recovered.assert_ok();
    let third = scene.ticket().await;
    scene
        .second_step(&third, &recovery[0])
        .await
        .assert_error(400, Some(40009));
    // Three failures from this address by now: the captcha is asked for, as for passwords.
    let lower = recovery[1].to_lowercase();
    scene
        .second_step_with_captcha(&third, &lower)
        .await
        .assert_ok();
}

#[tokio::test]
async fn wrong_second_steps_meet_the_captcha_and_disabling_needs_password_and_code() {
    let scene = Scene::builder().without_users().start().await;
    let token = scene.register(EMAIL, PASSWORD).await;
    let (secret, recovery) = enrol(&scene, &token).await;
    let ticket = scene.ticket().await;
    for _ in 0..3 {
        scene
            .second_step(&ticket, "000000")
            .await
            .assert_error(400, Some(40009));
    }
    // Past three failures the captcha is asked for, as for passwords.
    scene
        .second_step(&ticket, &recovery[0])
        .await
        .assert_error(400, Some(40002));
    scene
        .second_step_with_captcha(&ticket, &recovery[0])
        .await
        .assert_ok();

    let wrong_password = json!({"password": "not it", "code": recovery[1]});
    scene
        .post_as(&token, "/myapi/auth/2fa/disable", wrong_password)
        .await
        .assert_error(401, Some(40111));
    let wrong_code = json!({"password": PASSWORD, "code": "000000"});
    scene
        .post_as(&token, "/myapi/auth/2fa/disable", wrong_code)
        .await
        .assert_error(400, Some(40009));
    let right = json!({"password": PASSWORD, "code": code_at(&secret, now() + 30)});
    scene
        .post_as(&token, "/myapi/auth/2fa/disable", right)
        .await
        .assert_ok();
    // A plain login again (with the captcha the address's failures ask for).
    let captcha = scene.captcha().await;
    let body = json!({"email": EMAIL, "password": PASSWORD, "captcha_id": captcha,
        "captcha": "pass"});
    let login = scene.post("/myapi/auth/login", body).await;
    assert!(login.assert_ok()["token"].is_string());
}
