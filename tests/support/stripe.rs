//! A fake Stripe on loopback: it speaks Stripe's HTTP API for the calls the service makes,
//! answers with Stripe's own fixture objects (`tests/fixtures/stripe/fixtures3.json`, from
//! Stripe's OpenAPI repository under the MIT licence beside it) with
//! ids and fields overridden per request, replays a response for a repeated idempotency key as
//! Stripe does, and records what the client sent. It is as strict as Stripe where a client can
//! go wrong: no secret key is a 401, a parameter the endpoint does not take is a 400, and an
//! idempotency key reused with other parameters is a 400.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

/// Stripe's example objects, by type (`checkout.session`, `invoice`, ...).
pub fn fixture(object: &str) -> Value {
    static FIXTURES: OnceLock<Value> = OnceLock::new();
    let fixtures = FIXTURES.get_or_init(|| {
        let path = std::env::var("STRIPE_FIXTURES").unwrap_or_else(|_| {
            format!(
                "{}/tests/fixtures/stripe/fixtures3.json",
                env!("CARGO_MANIFEST_DIR")
            )
        });
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("Stripe fixtures at {path}: {error}"));
        serde_json::from_str(&text).expect("the fixtures are JSON")
    });
    fixtures["resources"][object].clone()
}

/// One request the service made.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub idempotency_key: Option<String>,
    pub form: HashMap<String, String>,
}

/// The secret key the tests configure (`STRIPE_SECRET_KEY`); any other is refused.
pub const SECRET_KEY: &str = "sk_test_fake";

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    /// Per idempotency key: what was asked (method, path, parameters) and what was answered.
    replies: HashMap<String, (String, Value)>,
    failing: bool,
    /// Set: Checkout Sessions get a URL on this fake that a browser can open (`hosted_pages`).
    hosted_base: Option<String>,
    /// Per hosted session: its success and cancel URLs.
    hosted: HashMap<String, (String, String)>,
    sessions: u32,
    customers: u32,
}

#[derive(Clone)]
pub struct FakeStripe {
    pub base_url: String,
    state: Arc<Mutex<State>>,
}

impl FakeStripe {
    pub async fn start() -> FakeStripe {
        let state = Arc::new(Mutex::new(State::default()));
        let shared = web::Data::from(state.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(shared.clone())
                .default_service(web::to(handle))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        FakeStripe {
            base_url: format!("http://127.0.0.1:{port}/"),
            state,
        }
    }

    /// Gives every new Checkout Session a `url` on this fake instead of checkout.stripe.com: a
    /// page with a "Pay" link to the session's `success_url` and a "Cancel" link to its
    /// `cancel_url`, for tests that walk a checkout in a browser (the webhook stays the test's).
    pub fn hosted_pages(&self) {
        self.state.lock().unwrap().hosted_base = Some(self.base_url.clone());
    }

    /// Makes every call fail with Stripe's 500 `api_error` until set back.
    pub fn set_failing(&self, failing: bool) {
        self.state.lock().unwrap().failing = failing;
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn requests_to(&self, method: &str, path_prefix: &str) -> Vec<Recorded> {
        let requests = self.requests();
        requests
            .into_iter()
            .filter(|r| r.method == method && r.path.starts_with(path_prefix))
            .collect()
    }
}

/// The top-level parameters each endpoint the service uses takes in the API version the service
/// pins (2026-09-30, as Stripe's OpenAPI description generates them into async-stripe's request
/// builders); `line_items[0][price_data][currency]` is the parameter `line_items`.
fn known_parameters(method: &str, segments: &[&str]) -> &'static [&'static str] {
    match (method, segments) {
        ("POST", ["checkout", "sessions"]) => &[
            "adaptive_pricing",
            "after_expiration",
            "allow_promotion_codes",
            "allowed_payment_method_types",
            "automatic_tax",
            "billing_address_collection",
            "branding_settings",
            "cancel_url",
            "client_reference_id",
            "consent_collection",
            "currency",
            "custom_fields",
            "custom_text",
            "customer",
            "customer_account",
            "customer_creation",
            "customer_email",
            "customer_update",
            "discounts",
            "excluded_payment_method_types",
            "expand",
            "expires_at",
            "integration_identifier",
            "invoice_creation",
            "line_items",
            "locale",
            "managed_payments",
            "metadata",
            "mode",
            "name_collection",
            "optional_items",
            "origin_context",
            "payment_intent_data",
            "payment_method_collection",
            "payment_method_configuration",
            "payment_method_data",
            "payment_method_options",
            "permissions",
            "phone_number_collection",
            "redirect_on_completion",
            "return_url",
            "saved_payment_method_options",
            "setup_intent_data",
            "shipping_address_collection",
            "shipping_options",
            "submit_type",
            "subscription_data",
            "success_url",
            "tax_id_collection",
            "ui_mode",
            "wallet_options",
        ],
        ("POST", ["checkout", "sessions", _, "expire"]) => &["expand"],
        ("POST", ["subscriptions", _]) => &[
            "add_invoice_items",
            "application_fee_percent",
            "automatic_tax",
            "billing_cycle_anchor",
            "billing_schedules",
            "billing_thresholds",
            "cancel_at",
            "cancel_at_period_end",
            "cancellation_details",
            "collection_method",
            "days_until_due",
            "default_payment_method",
            "default_source",
            "default_tax_rates",
            "description",
            "discounts",
            "expand",
            "invoice_settings",
            "items",
            "metadata",
            "off_session",
            "on_behalf_of",
            "pause_collection",
            "payment_behavior",
            "payment_settings",
            "pending_invoice_item_interval",
            "proration_behavior",
            "proration_date",
            "transfer_data",
            "trial_end",
            "trial_from_plan",
            "trial_settings",
        ],
        ("POST", ["customers"]) => &[
            "address",
            "balance",
            "business_name",
            "cash_balance",
            "description",
            "email",
            "expand",
            "individual_name",
            "invoice_prefix",
            "invoice_settings",
            "metadata",
            "name",
            "next_invoice_sequence",
            "payment_method",
            "phone",
            "preferred_locales",
            "shipping",
            "source",
            "tax",
            "tax_exempt",
            "tax_id_data",
            "test_clock",
            "validate",
        ],
        ("POST", ["customers", _]) => &[
            "address",
            "balance",
            "business_name",
            "cash_balance",
            "default_source",
            "description",
            "email",
            "expand",
            "individual_name",
            "invoice_prefix",
            "invoice_settings",
            "metadata",
            "name",
            "next_invoice_sequence",
            "phone",
            "preferred_locales",
            "shipping",
            "source",
            "tax",
            "tax_exempt",
            "validate",
        ],
        ("POST", ["billing_portal", "sessions"]) => &[
            "configuration",
            "customer",
            "customer_account",
            "expand",
            "flow_data",
            "locale",
            "on_behalf_of",
            "return_url",
        ],
        ("GET", ["subscriptions", _]) => &["expand"],
        ("DELETE", ["subscriptions", _]) => {
            &["cancellation_details", "expand", "invoice_now", "prorate"]
        }
        _ => &[],
    }
}

fn stripe_error(status: actix_web::http::StatusCode, error: Value) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": error }))
}

async fn handle(
    state: web::Data<Mutex<State>>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    use actix_web::http::StatusCode;
    // Parameters come in the body (POST) or the query string (DELETE, GET).
    let mut pairs =
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body).unwrap_or_default();
    pairs.extend(
        serde_urlencoded::from_str::<Vec<(String, String)>>(req.query_string()).unwrap_or_default(),
    );
    let form: HashMap<String, String> = pairs.into_iter().collect();
    if let Some(session_id) = req.path().strip_prefix("/c/pay/") {
        return hosted_page(&state.lock().unwrap(), session_id);
    }
    let authorized = req
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        == Some(&format!("Bearer {SECRET_KEY}"));
    if !authorized {
        return stripe_error(
            StatusCode::UNAUTHORIZED,
            json!({
            "type": "invalid_request_error",
            "message": "You did not provide an API key, or it is not this account's."}),
        );
    }
    let idempotency_key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let method = req.method().to_string();
    let path = req.path().to_owned();
    let mut state = state.lock().unwrap();
    state.requests.push(Recorded {
        method: method.clone(),
        path: path.clone(),
        idempotency_key: idempotency_key.clone(),
        form: form.clone(),
    });
    if state.failing {
        return HttpResponse::InternalServerError().json(json!({"error": {
            "type": "api_error", "message": "The fake Stripe was told to fail."}}));
    }
    let segments: Vec<&str> = path.trim_start_matches("/v1/").split('/').collect();
    let known = known_parameters(&method, &segments);
    let mut names: Vec<&String> = form.keys().collect();
    names.sort();
    if let Some(unknown) = names.iter().find(|name| {
        let top = name.split('[').next().unwrap_or(name);
        !known.contains(&top)
    }) {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            json!({
            "type": "invalid_request_error", "code": "parameter_unknown", "param": unknown,
            "message": format!("Received unknown parameter: {unknown}")}),
        );
    }
    // What a request asked, in a form that does not depend on the parameters' order.
    let mut asked: Vec<(&String, &String)> = form.iter().collect();
    asked.sort();
    let asked = format!("{method} {path} {asked:?}");
    if let Some((first_asked, reply)) = idempotency_key
        .as_ref()
        .and_then(|key| state.replies.get(key))
    {
        if *first_asked != asked {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                json!({
                "type": "idempotency_error",
                "message": "Keys for idempotent requests can only be used with the same \
                    parameters they were first used with."}),
            );
        }
        return HttpResponse::Ok().json(reply);
    }
    let reply = match (method.as_str(), segments.as_slice()) {
        ("POST", ["checkout", "sessions"]) => {
            state.sessions += 1;
            let mut session = checkout_session(&form, state.sessions);
            if let Some(base) = state.hosted_base.clone() {
                let id = session["id"].as_str().unwrap().to_owned();
                session["url"] = json!(format!("{base}c/pay/{id}"));
                let page = |name: &str| form.get(name).cloned().unwrap_or_default();
                state
                    .hosted
                    .insert(id, (page("success_url"), page("cancel_url")));
            }
            session
        }
        ("POST", ["customers"]) => {
            state.customers += 1;
            let mut customer = fixture("customer");
            customer["id"] = json!(format!("cus_fake_{}", state.customers));
            customer["email"] = json!(form.get("email"));
            customer["metadata"] = json!({ "user_id": form.get("metadata[user_id]") });
            customer
        }
        ("POST", ["customers", id]) => {
            let mut customer = fixture("customer");
            customer["id"] = json!(id);
            customer["email"] = json!(form.get("email"));
            customer
        }
        ("POST", ["billing_portal", "sessions"]) => {
            let mut session = fixture("billing_portal.session");
            session["customer"] = json!(form.get("customer"));
            session["return_url"] = json!(form.get("return_url"));
            session["url"] = json!("https://billing.stripe.com/p/session/test_fake");
            session
        }
        ("POST", ["checkout", "sessions", id, "expire"]) => {
            let mut session = fixture("checkout.session");
            session["id"] = json!(id);
            session["status"] = json!("expired");
            session["url"] = Value::Null;
            session
        }
        ("POST", ["subscriptions", id]) => {
            let mut subscription = fixture("subscription");
            subscription["id"] = json!(id);
            if let Some(cancel) = form.get("cancel_at_period_end") {
                subscription["cancel_at_period_end"] = json!(cancel == "true");
            }
            subscription
        }
        ("GET", ["subscriptions", id]) => {
            let mut subscription = fixture("subscription");
            subscription["id"] = json!(id);
            subscription
        }
        ("DELETE", ["subscriptions", id]) => {
            let mut subscription = fixture("subscription");
            subscription["id"] = json!(id);
            subscription["status"] = json!("canceled");
            subscription
        }
        _ => {
            return HttpResponse::NotFound().json(json!({"error": {
                "type": "invalid_request_error", "message": format!("Unrecognized request URL ({method}: {path})")}}));
        }
    };
    if let Some(key) = idempotency_key {
        state.replies.insert(key, (asked, reply.clone()));
    }
    HttpResponse::Ok().json(reply)
}

/// The stand-in for Stripe's hosted checkout page (`hosted_pages`).
fn hosted_page(state: &State, session_id: &str) -> HttpResponse {
    let Some((success, cancel)) = state.hosted.get(session_id) else {
        return HttpResponse::NotFound().finish();
    };
    let attribute = |url: &str| url.replace('&', "&amp;").replace('"', "&quot;");
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(format!(
            "<!doctype html><title>Fake Stripe Checkout</title><h1>Fake Stripe Checkout</h1>\
         <p><a id=\"pay\" href=\"{}\">Pay</a> <a id=\"cancel\" href=\"{}\">Cancel</a></p>",
            attribute(success),
            attribute(cancel)
        ))
}

fn checkout_session(form: &HashMap<String, String>, n: u32) -> Value {
    let mut session = fixture("checkout.session");
    let id = format!("cs_test_fake_{n}");
    session["id"] = json!(id);
    session["url"] = json!(format!("https://checkout.stripe.com/c/pay/{id}"));
    session["status"] = json!("open");
    session["payment_status"] = json!("unpaid");
    session["mode"] = json!(form.get("mode"));
    session["client_reference_id"] = json!(form.get("client_reference_id"));
    session["customer"] = json!(form.get("customer"));
    session["expires_at"] = json!(form.get("expires_at").and_then(|v| v.parse::<i64>().ok()));
    session["metadata"] = json!({
        "order_no": form.get("metadata[order_no]"),
        "user_id": form.get("metadata[user_id]"),
    });
    let amount = form
        .get("line_items[0][price_data][unit_amount]")
        .and_then(|v| v.parse::<i64>().ok());
    session["amount_total"] = json!(amount);
    session["amount_subtotal"] = json!(amount);
    session["currency"] = json!(form.get("line_items[0][price_data][currency]"));
    session["success_url"] = json!(form.get("success_url"));
    session["cancel_url"] = json!(form.get("cancel_url"));
    session
}

/// `Stripe-Signature` for `payload` at `timestamp`, as Stripe documents it (HMAC-SHA256 keyed
/// with the endpoint secret over `{timestamp}.{payload}`, hex): written here apart from the
/// service's own code, so a test signs the way Stripe does, not the way the service verifies.
pub fn stripe_signature(payload: &[u8], secret: &str, timestamp: i64) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

/// A Stripe event of `event_type` about `object`, created at `created` (Unix seconds).
pub fn event_at(event_type: &str, object: Value, created: i64) -> Value {
    let mut event = fixture("event");
    event["id"] = json!(format!("evt_{}", uuid::Uuid::new_v4().simple()));
    event["type"] = json!(event_type);
    event["created"] = json!(created);
    event["data"] = json!({"object": object});
    event
}

pub fn event(event_type: &str, object: Value) -> Value {
    event_at(event_type, object, chrono::Utc::now().timestamp())
}

/// A Checkout Session as Stripe sends it when the order's checkout completes.
pub fn completed_session(
    order_no: &str,
    session_id: &str,
    amount: i64,
    payment_status: &str,
) -> Value {
    let mut session = fixture("checkout.session");
    session["id"] = json!(session_id);
    session["client_reference_id"] = json!(order_no);
    session["metadata"] = json!({"order_no": order_no});
    session["mode"] = json!("payment");
    session["status"] = json!("complete");
    session["payment_status"] = json!(payment_status);
    session["amount_total"] = json!(amount);
    session["currency"] = json!("usd");
    session["payment_intent"] = json!(format!("pi_{}", &order_no[4..]));
    session
}
