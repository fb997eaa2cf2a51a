//! The one fixture of the area tests: the service with its fakes around it (an SMTP server, a
//! fake Stripe, an upstream provider), an admin and a user already logged in, and the steps
//! every area repeats (codes, registration, providers, funds, limits, keys, plans, orders).

use reqwest::Method;
use serde_json::{Value, json};

use super::smtp::SmtpSink;
use super::stripe::FakeStripe;
use super::upstream::Upstream;
use super::{Client, TestApp, TestConfig, TestResponse};

/// Stripe's webhook secret in every scene whose Stripe is configured.
pub const WEBHOOK_SECRET: &str = "whsec_test_secret";

pub struct Scene {
    pub app: TestApp,
    pub smtp: SmtpSink,
    pub stripe: FakeStripe,
    pub upstream: Upstream,
    users: Option<(Client, Client)>,
}

/// What a scene starts with: by default an admin and a user, Stripe configured, and the
/// provider `echo` (cost 1) on the upstream.
pub struct SceneBuilder {
    config: TestConfig,
    users: bool,
    stripe: bool,
}

impl Scene {
    pub fn builder() -> SceneBuilder {
        SceneBuilder {
            config: TestConfig::default(),
            users: true,
            stripe: true,
        }
    }

    pub async fn start() -> Scene {
        Scene::builder().start().await
    }

    /// The admin made at the start (`admin@example.com`).
    pub fn admin(&self) -> &Client {
        &self.users.as_ref().expect("a scene with users").0
    }

    /// The user made at the start (`caller@example.com`), who has no plan.
    pub fn user(&self) -> &Client {
        &self.users.as_ref().expect("a scene with users").1
    }
}

impl SceneBuilder {
    /// Settings on top of the scene's own (which these override).
    pub fn config(mut self, config: TestConfig) -> Self {
        self.config = config;
        self
    }

    /// No admin and no user: the test makes its accounts itself.
    pub fn without_users(mut self) -> Self {
        self.users = false;
        self
    }

    /// Stripe's keys unset: payments are not configured.
    pub fn without_stripe(mut self) -> Self {
        self.stripe = false;
        self
    }

    pub async fn start(self) -> Scene {
        let smtp = SmtpSink::start().await;
        let stripe = FakeStripe::start().await;
        let upstream = Upstream::start().await;
        let mut vars = TestConfig::default()
            .cheap_hashing()
            .var("CAPTCHA_TEST_CODE", "pass")
            .var("SMTP_URL", smtp.url())
            .var("PUBLIC_URL", "https://app.example.com")
            .var("GATEWAY_SETTLE_MS", "100");
        if self.stripe {
            vars = vars
                .var("STRIPE_SECRET_KEY", super::stripe::SECRET_KEY)
                .var("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
                .var("STRIPE_API_BASE", stripe.base_url.clone());
        }
        vars.vars.extend(self.config.vars);
        vars.database_proxy = self.config.database_proxy;
        let app = super::spawn_app_with(vars).await;
        let users = if self.users {
            let admin = app.user("admin@example.com", "admin").await;
            let user = app.user("caller@example.com", "user").await;
            Some((admin, user))
        } else {
            None
        };
        let scene = Scene {
            app,
            smtp,
            stripe,
            upstream,
            users,
        };
        if scene.users.is_some() {
            scene.add_provider("echo", 1, 2000).await;
        }
        scene
    }
}

/// Accounts: captcha, codes, registration and login through the API.
impl Scene {
    pub async fn captcha(&self) -> String {
        let response = self.app.get("/myapi/auth/captcha").await;
        response.assert_ok()["captcha_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn post(&self, path: &str, body: Value) -> TestResponse {
        self.app.post_json(path, &body).await
    }

    /// A POST with the session `token` (which may be forged or ended).
    pub async fn post_as(&self, token: &str, path: &str, body: Value) -> TestResponse {
        let request = self.app.request(Method::POST, path).bearer_auth(token);
        super::send(request.json(&body)).await
    }

    /// A GET with the session `token` (which may be forged or ended).
    pub async fn get_as(&self, token: &str, path: &str) -> TestResponse {
        super::send(self.app.request(Method::GET, path).bearer_auth(token)).await
    }

    pub async fn request_code(&self, email: &str) -> TestResponse {
        let captcha_id = self.captcha().await;
        let body = json!({"email": email, "captcha_id": captcha_id, "captcha": "pass"});
        self.post("/myapi/auth/email-code", body).await
    }

    /// The code of the last email sent to `email`.
    pub fn last_code(&self, email: &str) -> String {
        let mail = self.smtp.mails_to(email).pop().expect("a mail was sent");
        let at = mail
            .data
            .find("verification code is ")
            .expect("the code is in the mail");
        mail.data[at + 21..at + 27].to_owned()
    }

    pub async fn register_with_code(
        &self,
        email: &str,
        password: &str,
        code: &str,
    ) -> TestResponse {
        let body = json!({"email": email, "password": password, "email_code": code});
        self.post("/myapi/auth/register", body).await
    }

    /// Registers `email` with `password` and returns its session token.
    pub async fn register(&self, email: &str, password: &str) -> String {
        self.request_code(email).await.assert_ok();
        let code = self.last_code(email);
        let response = self.register_with_code(email, password, &code).await;
        response.assert_ok()["token"].as_str().unwrap().to_owned()
    }

    pub async fn login(&self, email: &str, password: &str) -> TestResponse {
        let body = json!({"email": email, "password": password});
        self.post("/myapi/auth/login", body).await
    }

    /// The number of rows of `table`.
    pub async fn count(&self, table: &str) -> i64 {
        self.app.count(table).await
    }
}

/// The gateway: providers, funds, the free plan's limits and keys.
impl Scene {
    /// A provider on the scene's upstream, whose calls carry the upstream's secret header.
    pub async fn add_provider(&self, slug: &str, cost: i64, timeout_ms: i64) {
        let body = json!({"slug": slug, "base_url": self.upstream.base_url,
            "auth_header": "X-Upstream-Token", "auth_value": "upstream-secret-value",
            "cost": cost, "timeout_ms": timeout_ms});
        self.admin()
            .post("/myapi/admin/providers", body)
            .await
            .assert_ok();
    }

    /// A provider of cost 1 and no credential at `base_url` (a provider of the test's own).
    pub async fn add_provider_at(&self, slug: &str, base_url: &str, timeout_ms: i64) {
        let body = json!({"slug": slug, "base_url": base_url, "cost": 1, "timeout_ms": timeout_ms});
        self.admin()
            .post("/myapi/admin/providers", body)
            .await
            .assert_ok();
    }

    /// Gives the user `amount` credits.
    pub async fn fund(&self, amount: i64) {
        self.app.fund(self.admin(), self.user().id, amount).await;
    }

    /// Sets the free plan's limits (the user has no subscription).
    pub async fn set_limits(&self, rps: i64, rph: i64, monthly_quota: Option<i64>) {
        self.app
            .set_free_limits(self.admin(), rps, rph, monthly_quota)
            .await;
    }

    /// A new API key of the user.
    pub async fn new_key(&self) -> String {
        self.user().new_key().await
    }

    pub async fn balance(&self) -> i64 {
        super::credit_account(&self.app.pool, self.user().id, "balance").await
    }

    pub async fn reserved(&self) -> i64 {
        super::credit_account(&self.app.pool, self.user().id, "reserved").await
    }

    /// Waits until the gateway has settled the user's balance to `expected`; the last seen.
    pub async fn settled_balance(&self, expected: i64) -> i64 {
        super::settled_balance(&self.app.pool, self.user().id, expected).await
    }
}

/// Stripe: webhooks signed as Stripe signs them.
impl Scene {
    /// Delivers `event` to the webhook endpoint with a valid signature made now.
    pub async fn deliver(&self, event: &Value) -> TestResponse {
        let body = serde_json::to_vec(event).unwrap();
        let now = self.app.clock().now().timestamp();
        let header = super::stripe::stripe_signature(&body, WEBHOOK_SECRET, now);
        let request = self
            .app
            .request(Method::POST, "/myapi/webhooks/stripe")
            .header("Stripe-Signature", header)
            .header("content-type", "application/json")
            .body(body);
        super::send(request).await
    }

    /// The Stripe checkout session the service opened for order `order_no`.
    pub async fn session_id(&self, order_no: &str) -> String {
        sqlx::query_scalar("SELECT checkout_session_id FROM orders WHERE order_no = $1")
            .bind(order_no)
            .fetch_one(&self.app.pool)
            .await
            .unwrap()
    }
}
