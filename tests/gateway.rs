//! API keys and the metered gateway over HTTP, against local upstream servers, with one and
//! with two instances of the service sharing PostgreSQL (and Redis when `REDIS_URL` is set).

mod support;

#[path = "gateway/key_controls.rs"]
mod key_controls;
#[path = "gateway/server.rs"]
mod server;
#[path = "gateway/wire.rs"]
mod wire;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use support::scene::Scene;
use support::stripe::{completed_session, event};
use support::upstream::{Behaviour, SocketUpstream};
use support::{TestApp, TestConfig, TestResponse, send};
use uuid::Uuid;

async fn gateway_with(config: TestConfig) -> Scene {
    Scene::builder().config(config).start().await
}

async fn gateway() -> Scene {
    gateway_with(TestConfig::default()).await
}

/// Settings that share limits through `redis`, under a prefix of this test's own.
fn sharing_redis(redis: String) -> TestConfig {
    TestConfig::default().var("REDIS_URL", redis).var(
        "REDIS_KEY_PREFIX",
        format!("test-{}", Uuid::new_v4().simple()),
    )
}

/// The first instant of the UTC month after `now`'s, computed here apart from the service.
fn start_of_next_month(now: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    use chrono::{Datelike, TimeZone};
    let (year, month) = match now.month() {
        12 => (now.year() + 1, 1),
        month => (now.year(), month + 1),
    };
    chrono::Utc
        .with_ymd_and_hms(year, month, 1, 0, 0, 0)
        .unwrap()
}

async fn call(app: &TestApp, key: &str, path: &str) -> TestResponse {
    send(app.request(Method::GET, path).header("X-API-Key", key)).await
}

#[tokio::test]
async fn keys_are_shown_once_listed_without_the_secret_and_revoked_by_their_owner() {
    let gw = gateway().await;
    let created = send(
        gw.app
            .request(Method::POST, "/myapi/keys")
            .bearer_auth(&gw.user().token)
            .json(&json!({"name": "ci"})),
    )
    .await;
    let data = created.assert_ok().clone();
    let key = data["key"].as_str().unwrap();
    assert!(key.starts_with("mk_") && key.len() >= 3 + 43, "{key}");
    assert!(key.starts_with(data["prefix"].as_str().unwrap()));
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE key_hash = $1")
        .bind(support::sha256(key))
        .fetch_one(&gw.app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 1, "the key is stored as its SHA-256");

    let listed = send(
        gw.app
            .request(Method::GET, "/myapi/keys")
            .bearer_auth(&gw.user().token),
    )
    .await;
    let items = listed.assert_ok()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1);
    assert!(items[0].get("key").is_none());
    assert_eq!(items[0]["name"], "ci");
    assert!(items[0]["last_used_at"].is_null());

    let id = data["id"].as_str().unwrap();
    let (_, stranger) = support::create_user(&gw.app, "stranger@example.com", "user").await;
    let path = format!("/myapi/keys/{id}");
    send(gw.app.request(Method::DELETE, &path).bearer_auth(&stranger))
        .await
        .assert_error(403, Some(40302));
    send(
        gw.app
            .request(Method::DELETE, &format!("/myapi/keys/{}", Uuid::new_v4()))
            .bearer_auth(&gw.user().token),
    )
    .await
    .assert_error(404, None);
    gw.fund(10).await;
    call(&gw.app, key, "/api/v1/echo/x").await.assert_ok_raw();
    send(
        gw.app
            .request(Method::DELETE, &path)
            .bearer_auth(&gw.user().token),
    )
    .await
    .assert_ok();
    call(&gw.app, key, "/api/v1/echo/x")
        .await
        .assert_error(401, Some(40103));
    let empty = send(
        gw.app
            .request(Method::POST, "/myapi/keys")
            .bearer_auth(&gw.user().token)
            .json(&json!({"name": ""})),
    )
    .await;
    empty.assert_error(400, None);
}

#[tokio::test]
async fn an_account_holds_at_most_twenty_keys() {
    let gw = gateway().await;
    let create = || {
        send(
            gw.app
                .request(Method::POST, "/myapi/keys")
                .bearer_auth(&gw.user().token)
                .json(&json!({"name": "k"})),
        )
    };
    let responses = futures_util::future::join_all((0..25).map(|_| create())).await;
    assert_eq!(responses.iter().filter(|r| r.status == 200).count(), 20);
    for refused in responses.iter().filter(|r| r.status != 200) {
        refused.assert_error(400, None);
    }
}

trait RawOk {
    fn assert_ok_raw(&self) -> &Value;
}

impl RawOk for TestResponse {
    /// A forwarded answer: the upstream's body, with the gateway's meters.
    fn assert_ok_raw(&self) -> &Value {
        assert_eq!(self.status, 200, "{}", self.text);
        for header in [
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-credits-remaining",
            "x-request-id",
        ] {
            assert!(self.header(header).is_some(), "{header} missing");
        }
        &self.json
    }
}

#[tokio::test]
async fn calls_are_checked_in_the_contract_order() {
    let gw = gateway().await;
    // Three a second: not the seeded free plan's two, so the header shows the plan's limit.
    gw.set_limits(3, 1000, None).await;
    let key = gw.new_key().await;
    send(gw.app.request(Method::GET, "/api/v1/echo/x"))
        .await
        .assert_error(401, Some(40102));
    call(&gw.app, "mk_not_a_real_key", "/api/v1/echo/x")
        .await
        .assert_error(401, Some(40103));
    // Credits are checked after the provider and the limits.
    call(&gw.app, &key, "/api/v1/nowhere/x")
        .await
        .assert_error(404, None);
    let broke = call(&gw.app, &key, "/api/v1/echo/x").await;
    broke.assert_error(402, Some(40201));
    assert_eq!(broke.header("x-credits-remaining"), Some("0"));
    assert_eq!(gw.upstream.hits(), 0);

    gw.fund(100).await;
    // After a refusal for credits the gateway asks the database again a moment later; a call
    // refused for credits consumes no limit, so polling costs nothing.
    let first = support::eventually(
        Duration::from_secs(5),
        "the credits reach the gateway",
        || {
            let (app, key) = (&gw.app, &key);
            async move {
                let answer = call(app, key, "/api/v1/echo/x").await;
                (answer.status == 200).then_some(answer)
            }
        },
    )
    .await;
    assert_eq!(first.header("x-ratelimit-limit"), Some("3"));
    assert_eq!(first.header("x-ratelimit-remaining"), Some("2"));
    call(&gw.app, &key, "/api/v1/echo/x").await.assert_ok_raw();
    call(&gw.app, &key, "/api/v1/echo/x").await.assert_ok_raw();
    let limited = call(&gw.app, &key, "/api/v1/echo/x").await;
    limited.assert_error(429, Some(42901));
    assert!(limited.header("retry-after").is_some());
    assert_eq!(limited.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(gw.upstream.hits(), 3);

    let admin_path = format!("/myapi/admin/users/{}/freeze", gw.user().id);
    gw.admin()
        .call(Method::POST, &admin_path, None)
        .await
        .assert_ok();
    call(&gw.app, &key, "/api/v1/echo/x")
        .await
        .assert_error(403, Some(40301));
    let unfreeze = format!("/myapi/admin/users/{}/unfreeze", gw.user().id);
    gw.admin()
        .call(Method::POST, &unfreeze, None)
        .await
        .assert_ok();
    // Served again once the per-second window has room (a refused call consumes none).
    support::eventually(
        Duration::from_secs(3),
        "the unfrozen account is served",
        || async {
            let answer = call(&gw.app, &key, "/api/v1/echo/x").await;
            (answer.status == 200).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn the_hourly_limit_and_the_monthly_quota_stop_at_their_numbers() {
    let gw = gateway().await;
    gw.fund(1000).await;
    gw.set_limits(1000, 3, None).await;
    let key = gw.new_key().await;
    for _ in 0..3 {
        call(&gw.app, &key, "/api/v1/echo/x").await.assert_ok_raw();
    }
    let hourly = call(&gw.app, &key, "/api/v1/echo/x").await;
    hourly.assert_error(429, Some(42902));
    let wait: u64 = hourly.header("retry-after").unwrap().parse().unwrap();
    assert!(wait >= 1000, "a third of an hour away, not {wait}");

    let gw = gateway().await;
    gw.fund(1000).await;
    gw.set_limits(1000, 100_000, Some(7)).await;
    let key = gw.new_key().await;
    let responses = futures_util::stream::iter(0..20)
        .map(|_| call(&gw.app, &key, "/api/v1/echo/x"))
        .buffer_unordered(10)
        .collect::<Vec<_>>()
        .await;
    assert_eq!(responses.iter().filter(|r| r.status == 200).count(), 7);
    for refused in responses.iter().filter(|r| r.status != 200) {
        refused.assert_error(429, Some(42903));
    }
    assert_eq!(gw.upstream.hits(), 7);
    assert_eq!(gw.settled_balance(993).await, 993);
    let status = send(
        gw.app
            .request(Method::GET, "/myapi/status")
            .header("X-API-Key", &key),
    )
    .await;
    let data = status.assert_ok();
    assert_eq!(data["month_calls"], 7);
    assert_eq!(data["monthly_remaining"], 0);
    assert_eq!(data["credits"], 993);
}

#[tokio::test]
async fn a_call_is_forwarded_with_the_providers_credentials_and_streamed_back() {
    let gw = gateway().await;
    gw.fund(10).await;
    let key = gw.new_key().await;
    let request = gw
        .app
        .request(Method::POST, "/api/v1/echo/v2/items?q=rust&page=2")
        .header("Authorization", format!("Bearer {key}"))
        .header("X-Custom", "kept")
        .header("Cookie", "session=secret")
        .header("X-Forwarded-For", "203.0.113.9")
        .header("Connection", "keep-alive, X-Drop-Me")
        .header("X-Drop-Me", "dropped")
        .header("X-Upstream-Token", "forged by the client")
        .body(r#"{"hello": "world"}"#);
    let response = send(request).await;
    let echoed = response.assert_ok_raw();
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["path"], "/base/v2/items");
    assert_eq!(echoed["query"], "q=rust&page=2");
    assert_eq!(echoed["body"], r#"{"hello": "world"}"#);
    let headers = &echoed["headers"];
    assert_eq!(headers["x-upstream-token"], "upstream-secret-value");
    assert_eq!(headers["x-custom"], "kept");
    assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    // The provider's host, not the gateway's that the client named.
    let upstream_host = gw.upstream.base_url["http://".len()..].trim_end_matches("/base");
    assert_eq!(headers["host"], upstream_host);
    for gone in ["authorization", "x-api-key", "cookie", "x-drop-me"] {
        assert!(headers.get(gone).is_none(), "{gone} was forwarded");
    }
    assert_eq!(response.header("x-upstream"), Some("yes"));
    assert_eq!(response.header("x-credits-remaining"), Some("9"));

    // Statuses below 500 are the upstream's answer, and charged.
    gw.upstream.set(Behaviour::Status(404));
    let missing = call(&gw.app, &key, "/api/v1/echo/nothing").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json["upstream_status"], 404);
    assert_eq!(gw.settled_balance(8).await, 8);
}

/// Calls to a provider share keep-alive connections: calls one after another go on one
/// connection; once the provider closed it for being idle, it is not used again and the next
/// calls go on a new one, each answered and charged once.
#[tokio::test]
async fn calls_share_keep_alive_connections_and_leave_one_the_provider_closed() {
    let provider = SocketUpstream::start(Duration::from_millis(300)).await;
    let gw = gateway().await;
    gw.set_limits(1000, 100_000, None).await;
    gw.add_provider_at("kept", &provider.base_url, 2000).await;
    gw.fund(100).await;
    let key = gw.new_key().await;

    for _ in 0..10 {
        call(&gw.app, &key, "/api/v1/kept/x").await.assert_ok_raw();
    }
    assert_eq!(
        provider.accepted(),
        1,
        "ten calls in a row on one connection"
    );

    support::eventually(
        Duration::from_secs(5),
        "the provider closes the idle connection",
        || async { (provider.closed_idle() == 1).then_some(()) },
    )
    .await;
    // Right after the close: the gateway either saw it already and skips the connection, or
    // its request is refused unsent there and goes again on a new one. Never a 502.
    for _ in 0..5 {
        call(&gw.app, &key, "/api/v1/kept/x").await.assert_ok_raw();
    }
    assert_eq!(
        provider.accepted(),
        2,
        "one new connection for the next calls"
    );
    assert_eq!(gw.settled_balance(85).await, 85);
}

#[tokio::test]
async fn upstream_failures_answer_50201_and_cost_nothing() {
    let gw = gateway().await;
    gw.fund(5).await;
    gw.set_limits(1000, 100_000, Some(2)).await;
    let key = gw.new_key().await;
    gw.upstream.set(Behaviour::Status(503));
    for _ in 0..4 {
        call(&gw.app, &key, "/api/v1/echo/x")
            .await
            .assert_error(502, Some(50201));
    }
    // The upstream stalls far longer than the provider's 200 ms timeout: the answer comes from
    // the timeout, long before the upstream would have answered.
    gw.upstream.set(Behaviour::Stall(Duration::from_secs(5)));
    gw.add_provider("slow", 1, 200).await;
    let started = Instant::now();
    call(&gw.app, &key, "/api/v1/slow/x")
        .await
        .assert_error(502, Some(50201));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered at the timeout, not when the upstream did"
    );
    let dead =
        json!({"slug": "dead", "base_url": "http://127.0.0.1:9", "cost": 1, "timeout_ms": 1000});
    gw.admin()
        .call(Method::POST, "/myapi/admin/providers", Some(dead))
        .await
        .assert_ok();
    call(&gw.app, &key, "/api/v1/dead/x")
        .await
        .assert_error(502, Some(50201));

    // None of them counted towards the quota of two either.
    gw.upstream.set(Behaviour::Echo);
    call(&gw.app, &key, "/api/v1/echo/x").await.assert_ok_raw();
    call(&gw.app, &key, "/api/v1/echo/x").await.assert_ok_raw();
    call(&gw.app, &key, "/api/v1/echo/x")
        .await
        .assert_error(429, Some(42903));
    assert_eq!(gw.settled_balance(3).await, 3);

    // Usage is settled with the credits, once a tick: wait until both providers are there.
    let buckets = support::eventually(
        Duration::from_secs(5),
        "usage of both providers",
        || async {
            let usage = send(
                gw.app
                    .request(Method::GET, "/myapi/usage?granularity=day")
                    .bearer_auth(&gw.user().token),
            )
            .await;
            let buckets = usage.assert_ok()["items"].as_array().unwrap().clone();
            let settled = ["echo", "slow"]
                .iter()
                .all(|slug| buckets.iter().any(|b| b["provider"] == *slug));
            settled.then_some(buckets)
        },
    )
    .await;
    let echo = buckets.iter().find(|b| b["provider"] == "echo").unwrap();
    assert_eq!(
        (
            echo["calls"].as_i64(),
            echo["credits"].as_i64(),
            echo["errors"].as_i64()
        ),
        (Some(2), Some(2), Some(4))
    );
    let slow = buckets.iter().find(|b| b["provider"] == "slow").unwrap();
    assert_eq!(
        (slow["calls"].as_i64(), slow["errors"].as_i64()),
        (Some(0), Some(1))
    );
}

#[tokio::test]
async fn the_global_in_flight_cap_answers_50301() {
    let gw = gateway_with(TestConfig::default().var("GATEWAY_MAX_IN_FLIGHT", "1")).await;
    gw.fund(10).await;
    let key = gw.new_key().await;
    gw.upstream
        .set(Behaviour::Stall(Duration::from_millis(700)));
    let slow = call(&gw.app, &key, "/api/v1/echo/x");
    let second = async {
        // The first call holds the only slot once the upstream has it.
        support::eventually(
            Duration::from_secs(5),
            "the first call reaches the upstream",
            || async { (gw.upstream.hits() == 1).then_some(()) },
        )
        .await;
        call(&gw.app, &key, "/api/v1/echo/y").await
    };
    let (slow, second) = tokio::join!(slow, second);
    slow.assert_ok_raw();
    second.assert_error(503, Some(50301));
    assert!(second.header("retry-after").is_some());
    assert_eq!(
        gw.settled_balance(9).await,
        9,
        "the refused call cost nothing"
    );
}

/// Sends `path` as it is, without a client normalising `..` away.
async fn raw_get(app: &TestApp, key: &str, path: &str) -> String {
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {key}\r\nConnection: close\r\n\r\n"
    );
    raw_exchange(app, &head, b"").await
}

/// Sends `head` and then `body` as they are, half-closes, and answers what the gateway said.
async fn raw_exchange(app: &TestApp, head: &str, body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    // A reset after the answer is still an answer.
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// A chunked request body reaches the provider whole; a body the client cuts short never
/// reaches it as a request, and the call costs nothing.
#[tokio::test]
async fn request_bodies_reach_the_provider_whole_or_not_at_all() {
    let gw = gateway().await;
    gw.set_limits(1000, 100_000, None).await;
    gw.fund(10).await;
    let key = gw.new_key().await;
    let chunked = format!(
        "POST /api/v1/echo/items HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {key}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let answer = raw_exchange(&gw.app, &chunked, b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(gw.upstream.last_request()["body"], "hello world");
    assert_eq!(gw.settled_balance(9).await, 9);

    let cut = format!(
        "POST /api/v1/echo/items HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {key}\r\n\
         Content-Length: 100\r\nConnection: close\r\n\r\n"
    );
    let answer = raw_exchange(&gw.app, &cut, b"only ten b").await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 502"),
        "{answer}"
    );
    assert_eq!(gw.upstream.hits(), 1, "the cut body reached the provider");
    // The next call settles after the cut one: if the cut one had been charged, 7 would show.
    call(&gw.app, &key, "/api/v1/echo/x").await.assert_ok_raw();
    assert_eq!(gw.settled_balance(8).await, 8);
}

#[tokio::test]
async fn a_path_cannot_leave_the_providers_base_path() {
    let gw = gateway().await;
    gw.fund(10).await;
    let key = gw.new_key().await;
    for path in [
        "/api/v1/echo/../admin",
        "/api/v1/echo/%2e%2e/admin",
        "/api/v1/echo/a%2F..%2Fb",
        "/api/v1/echo/x/%2E%2E/%2e%2e/secret",
        "/api/v1/echo/a%5c..%5cb",
    ] {
        let answer = raw_get(&gw.app, &key, path).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(answer.contains("\"code\":400"));
    }
    // No provider named at all: the key is checked, then there is no such provider.
    for path in ["/api/v1", "/api/v1/", "/api/v1//x"] {
        let answer = raw_get(&gw.app, &key, path).await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{path}: {answer}");
        assert!(answer.contains("No such provider"), "{path}: {answer}");
    }
    assert_eq!(gw.upstream.hits(), 0);
    let fine = raw_get(&gw.app, &key, "/api/v1/echo/a..b/c").await;
    assert!(fine.starts_with("HTTP/1.1 200"), "{fine}");
    assert_eq!(gw.upstream.last_request()["path"], "/base/a..b/c");
}

#[tokio::test]
async fn provider_secrets_are_never_shown_in_full() {
    let gw = gateway().await;
    let listed = gw
        .admin()
        .call(Method::GET, "/myapi/admin/providers", None)
        .await;
    let providers = listed.assert_ok().as_array().unwrap().clone();
    assert_eq!(providers[0]["auth_value"], "****alue");
    assert!(!listed.text.contains("upstream-secret-value"));
    let user_view = send(
        gw.app
            .request(Method::GET, "/myapi/admin/providers")
            .bearer_auth(&gw.user().token),
    )
    .await;
    user_view.assert_error(403, None);
    let bad = json!({"slug": "Bad Slug", "base_url": "ftp://x", "cost": -1, "timeout_ms": 0});
    gw.admin()
        .call(Method::POST, "/myapi/admin/providers", Some(bad))
        .await
        .assert_error(400, None);
    // Header injection through a provider's credentials is refused at the door.
    let injected = json!({"slug": "evil", "base_url": gw.upstream.base_url, "auth_header": "X-Token",
        "auth_value": "secret\r\nX-Injected: yes", "cost": 1, "timeout_ms": 1000});
    gw.admin()
        .call(Method::POST, "/myapi/admin/providers", Some(injected))
        .await
        .assert_error(400, None);
    let bad_name = json!({"slug": "evil", "base_url": gw.upstream.base_url, "auth_header": "X Token: y",
        "auth_value": "secret", "cost": 1, "timeout_ms": 1000});
    gw.admin()
        .call(Method::POST, "/myapi/admin/providers", Some(bad_name))
        .await
        .assert_error(400, None);
    let update = json!({"slug": "echo", "base_url": gw.upstream.base_url, "auth_header": "X-Upstream-Token",
        "cost": 3, "timeout_ms": 1000});
    let updated = gw
        .admin()
        .call(Method::PUT, "/myapi/admin/providers/echo", Some(update))
        .await;
    assert_eq!(updated.assert_ok()["cost"], 3);
    assert_eq!(
        updated.json["data"]["auth_value"], "****alue",
        "an absent secret is kept"
    );
    gw.admin()
        .call(Method::DELETE, "/myapi/admin/providers/echo", None)
        .await
        .assert_ok();
    gw.admin()
        .call(Method::DELETE, "/myapi/admin/providers/echo", None)
        .await
        .assert_error(404, None);
}

#[tokio::test]
async fn admins_find_accounts_by_email() {
    let gw = gateway().await;
    let found = gw
        .admin()
        .call(Method::GET, "/myapi/admin/users?email=CALLER", None)
        .await;
    let data = found.assert_ok();
    assert_eq!(data["total"], 1);
    assert_eq!(data["items"][0]["email"], "caller@example.com");
    let wildcard = gw
        .admin()
        .call(Method::GET, "/myapi/admin/users?email=%25", None)
        .await;
    assert_eq!(
        wildcard.assert_ok()["total"],
        0,
        "LIKE wildcards are taken literally"
    );
    let all = gw
        .admin()
        .call(Method::GET, "/myapi/admin/users", None)
        .await;
    assert_eq!(all.assert_ok()["total"], 2);
    send(
        gw.app
            .request(Method::GET, "/myapi/admin/users")
            .bearer_auth(&gw.user().token),
    )
    .await
    .assert_error(403, None);
    let nobody = format!("/myapi/admin/users/{}/freeze", Uuid::new_v4());
    gw.admin()
        .call(Method::POST, &nobody, None)
        .await
        .assert_error(404, None);
    let herself = format!("/myapi/admin/users/{}/freeze", gw.admin().id);
    gw.admin()
        .call(Method::POST, &herself, None)
        .await
        .assert_error(400, None);
    gw.admin().get("/myapi/user/profile").await.assert_ok();
}

#[tokio::test]
async fn last_used_at_is_kept_without_a_write_per_call() {
    let gw = gateway().await;
    gw.fund(10).await;
    let key = gw.new_key().await;
    call(&gw.app, &key, "/api/v1/echo/x").await.assert_ok_raw();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let listed = send(
            gw.app
                .request(Method::GET, "/myapi/keys")
                .bearer_auth(&gw.user().token),
        )
        .await;
        if listed.assert_ok()["items"][0]["last_used_at"].is_string() {
            break;
        }
        assert!(Instant::now() < deadline, "last_used_at was never written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn two_thousand_calls_against_five_hundred_credits_charge_exactly_five_hundred() {
    let gw = gateway().await;
    gw.fund(500).await;
    gw.set_limits(1_000_000, 10_000_000, None).await;
    let key = gw.new_key().await;
    let other = gw.app.another_instance(TestConfig::default()).await;
    let instances = [&gw.app, &other];
    let responses = futures_util::stream::iter(0..2000)
        .map(|i| call(instances[i % 2], &key, "/api/v1/echo/x"))
        .buffer_unordered(200)
        .collect::<Vec<_>>()
        .await;
    let ok = responses.iter().filter(|r| r.status == 200).count();
    let broke = responses
        .iter()
        .filter(|r| r.json["sub_code"] == 40201)
        .count();
    for odd in responses
        .iter()
        .filter(|r| r.status != 200 && r.json["sub_code"] != 40201)
    {
        eprintln!("unexpected answer: {} {}", odd.status, odd.text);
    }
    assert_eq!(
        (ok, broke),
        (500, 1500),
        "every call is served or refused for credits"
    );
    assert_eq!(gw.upstream.hits(), 500);
    assert_eq!(gw.settled_balance(0).await, 0);
    let charged: i64 = sqlx::query_scalar(
        "SELECT (-sum(amount))::bigint FROM ledger_entries WHERE reason = 'usage'",
    )
    .fetch_one(&gw.app.pool)
    .await
    .unwrap();
    assert_eq!(charged, 500);
}

#[tokio::test]
async fn revocation_and_freezing_reach_the_other_instance_within_a_second() {
    let gw = gateway().await;
    gw.fund(100).await;
    let key = gw.new_key().await;
    let other = gw.app.another_instance(TestConfig::default()).await;
    call(&other, &key, "/api/v1/echo/x").await.assert_ok_raw();

    // The other instance learns of it from a notification (its periodic status refresh is
    // only the floor); the deadline leaves a loaded machine room for scheduling.
    let answers = |status: u16| {
        let (other, key) = (&other, &key);
        move || async move {
            let answer = call(other, key, "/api/v1/echo/x").await;
            (answer.status == status).then_some(answer)
        }
    };
    let freeze = format!("/myapi/admin/users/{}/freeze", gw.user().id);
    gw.admin()
        .call(Method::POST, &freeze, None)
        .await
        .assert_ok();
    support::eventually(
        Duration::from_secs(3),
        "the freeze reaches the other instance",
        answers(403),
    )
    .await
    .assert_error(403, Some(40301));
    let unfreeze = format!("/myapi/admin/users/{}/unfreeze", gw.user().id);
    gw.admin()
        .call(Method::POST, &unfreeze, None)
        .await
        .assert_ok();
    support::eventually(
        Duration::from_secs(3),
        "the unfreeze reaches the other instance",
        answers(200),
    )
    .await
    .assert_ok_raw();

    let listed = send(
        gw.app
            .request(Method::GET, "/myapi/keys")
            .bearer_auth(&gw.user().token),
    )
    .await;
    let id = listed.assert_ok()["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    send(
        gw.app
            .request(Method::DELETE, &format!("/myapi/keys/{id}"))
            .bearer_auth(&gw.user().token),
    )
    .await
    .assert_ok();
    support::eventually(
        Duration::from_secs(3),
        "the revocation reaches the other instance",
        answers(401),
    )
    .await
    .assert_error(401, Some(40103));
}

#[tokio::test]
async fn limits_hold_across_two_instances_sharing_redis() {
    let Some(redis) = support::redis_url("limits_hold_across_two_instances_sharing_redis") else {
        return;
    };
    let gw = gateway_with(sharing_redis(redis)).await;
    gw.fund(10_000).await;
    gw.set_limits(5, 100_000, Some(40)).await;
    let key = gw.new_key().await;
    let other = gw.app.another_instance(TestConfig::default()).await;
    let instances = [&gw.app, &other];

    let started = Instant::now();
    let mut allowed = 0;
    let mut i = 0;
    while started.elapsed() < Duration::from_millis(2500) {
        let response = call(instances[i % 2], &key, "/api/v1/echo/x").await;
        if response.status == 200 {
            allowed += 1;
        } else {
            response.assert_error(429, Some(42901));
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started.elapsed().as_secs_f64().ceil() as usize;
    assert!(
        allowed <= 5 * seconds + 5,
        "{allowed} calls passed a limit of 5/s in {seconds} s"
    );
    assert!(allowed >= 5, "the limit let through {allowed}");

    // The monthly quota stops at its number exactly across instances that lease their events
    // (at a million calls a second, a busy instance may lease up to 1,024 at a time): never above it,
    // and not below it either, since the events an instance leased and did not use go back to
    // Redis once it is idle.
    let before = allowed;
    gw.set_limits(1_000_000, 10_000_000, Some(40)).await;
    let reloaded = gw.app.another_instance(TestConfig::default()).await;
    let third = reloaded.another_instance(TestConfig::default()).await;
    let instances = [&reloaded, &third];
    let responses = futures_util::stream::iter(0..60)
        .map(|i| call(instances[i % 2], &key, "/api/v1/echo/x"))
        .buffer_unordered(20)
        .collect::<Vec<_>>()
        .await;
    let mut passed = before;
    for response in responses {
        match response.status {
            200 => passed += 1,
            _ => response.assert_error(429, Some(42903)),
        }
    }
    assert!(passed <= 40, "{passed} calls passed a quota of 40");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut i = 0;
    while passed < 40 && Instant::now() < deadline {
        let response = call(instances[i % 2], &key, "/api/v1/echo/x").await;
        match response.status {
            200 => passed += 1,
            _ => {
                response.assert_error(429, Some(42903));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        i += 1;
    }
    assert_eq!(
        passed, 40,
        "the quota of 40 is reached across the instances"
    );
    tokio::time::sleep(meterapi::limits::LEASE_IDLE_RETURN * 2).await;
    for instance in instances {
        call(instance, &key, "/api/v1/echo/x")
            .await
            .assert_error(429, Some(42903));
    }
}

/// Two instances sharing Redis lease a busy account's events (at 160 calls a second, at most
/// 160 / 16 = 10 at a time each) and still admit no more than the shared limit allows: from a
/// full bucket, the burst of 160 and 160 a second; once the bucket is drained, at most 160 a
/// second plus what each instance held leased when the second began.
#[tokio::test]
async fn leased_limits_admit_at_most_a_lease_per_instance_above_the_shared_rate() {
    let Some(redis) = support::redis_url(
        "leased_limits_admit_at_most_a_lease_per_instance_above_the_shared_rate",
    ) else {
        return;
    };
    let gw = gateway_with(sharing_redis(redis)).await;
    gw.fund(100_000).await;
    gw.set_limits(160, 10_000_000, None).await;
    let key = gw.new_key().await;
    let other = gw.app.another_instance(TestConfig::default()).await;
    let instances = [&gw.app, &other];

    let key = key.as_str();
    let started = Instant::now();
    let run = Duration::from_millis(2500);
    let calls = futures_util::stream::iter(0..)
        .take_while(|_| std::future::ready(started.elapsed() < run))
        .map(|i| async move {
            let sent = started.elapsed();
            let response = call(instances[i % 2], key, "/api/v1/echo/x").await;
            (sent, started.elapsed(), response)
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut admitted = Vec::new();
    for (sent, answered, response) in &calls {
        match response.status {
            200 => admitted.push((*sent, *answered)),
            _ => response.assert_error(429, Some(42901)),
        }
    }
    let total = admitted.len() as f64;
    assert!(
        total <= 160.0 + 160.0 * elapsed,
        "{total} calls passed 160/s (burst 160) in {elapsed:.2} s"
    );
    assert!(
        admitted.len() >= 160 && admitted.len() < calls.len(),
        "the burst passes and the limit refuses the rest: {} of {}",
        admitted.len(),
        calls.len()
    );
    // In the second from `a`, the shared limit admits what its bucket still held at `a` (at most
    // the burst, and at most 160 + 160 a less what was admitted before `a`) and 160 more; the
    // instances add at most the events each held leased at `a`, 10 each. Calls sent after `a`
    // and answered within the second were admitted inside it; calls answered before `a` were
    // admitted before it.
    for start_ms in [500, 1000, 1500] {
        let from = Duration::from_millis(start_ms);
        let to = from + Duration::from_secs(1);
        let before = admitted
            .iter()
            .filter(|(_, answered)| *answered <= from)
            .count();
        let inside = admitted
            .iter()
            .filter(|(sent, answered)| *sent >= from && *answered <= to)
            .count();
        let held = (160 + 160 * start_ms as usize / 1000)
            .saturating_sub(before)
            .min(160);
        let bound = held + 160 + 2 * 10 + 1;
        assert!(
            inside <= bound,
            "{inside} calls admitted in the second from {start_ms} ms (at most {bound})"
        );
    }
}

/// The scene of the tests that run the service's binary: 1,000 credits, limits out of the way,
/// leases that expire after 2 s, and a key.
async fn gateway_for_a_binary() -> (Scene, String) {
    let gw = gateway_with(TestConfig::default().var("GATEWAY_LEASE_TTL_SECS", "2")).await;
    gw.fund(1000).await;
    gw.set_limits(1_000_000, 10_000_000, None).await;
    let key = gw.new_key().await;
    (gw, key)
}

/// The service's own binary on the test's database, with a settlement tick of a minute (so
/// nothing it serves is settled before it stops) and a lease TTL of 2 s; and its port.
async fn start_binary(gw: &Scene) -> (tokio::process::Child, u64) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_meterapi"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("APP_ENV", "production")
        .env("PUBLIC_URL", "https://api.example.com")
        .env("SMTP_URL", "smtp://127.0.0.1:9?tls=none")
        .env("DATABASE_URL", gw.app.database_url().await)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("DATA_DIR", gw.app.data_dir.path())
        .env("GATEWAY_LEASE_TTL_SECS", "2")
        .env("GATEWAY_SETTLE_MS", "60000")
        .env("HTTP_WORKERS", "1")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the service binary starts");
    // The port is logged once the service serves; the read ends when the process does, and a
    // deadline bounds a process that hangs.
    let stdout = child.stdout.take().unwrap();
    let port = tokio::time::timeout(Duration::from_secs(120), async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("the binary exited before it logged its port");
            let log: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if let Some(port) = log["port"].as_u64() {
                break port;
            }
        }
    })
    .await
    .expect("the binary logs its port within 120 s");
    (child, port)
}

/// A stopped instance (SIGTERM) settles what it served and gives every reserve back before it
/// exits, without waiting for a tick or for its leases to expire.
#[tokio::test]
async fn a_stopped_instance_settles_and_returns_its_reserve_before_it_exits() {
    let (gw, key) = gateway_for_a_binary().await;
    let capped = gw.new_key().await;
    let (mut child, port) = start_binary(&gw).await;
    let capped_id: Uuid = sqlx::query_scalar("SELECT id FROM api_keys WHERE prefix = $1")
        .bind(&capped[..11])
        .fetch_one(&gw.app.pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE api_keys SET spend_cap_credits = 100, spend_cap_period = 'month' WHERE id = $1",
    )
    .bind(capped_id)
    .execute(&gw.app.pool)
    .await
    .unwrap();
    let client = reqwest::Client::new();
    for key in [&key, &capped] {
        for _ in 0..10 {
            let url = format!("http://127.0.0.1:{port}/api/v1/echo/x");
            let response = send(client.get(url).header("X-API-Key", key)).await;
            assert_eq!(response.status, 200, "{}", response.text);
        }
    }
    assert!(gw.reserved().await > 0, "the instance holds a lease");
    assert_eq!(gw.balance().await, 1000, "nothing settled before the stop");

    stop(&child);
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the instance stops within 30 s")
        .unwrap();
    assert!(exit.success(), "{exit}");
    // At once, not after the lease TTL.
    assert_eq!(gw.balance().await, 980);
    assert_eq!(gw.reserved().await, 0);
    assert_eq!(gw.app.count("credit_leases").await, 0);
    assert_eq!(gw.app.count("key_spend_leases").await, 0);
    assert_eq!(gw.upstream.hits(), 20);
}

/// Asks the instance to stop, as its service manager would (SIGTERM).
fn stop(child: &tokio::process::Child) {
    let pid = child.id().unwrap().to_string();
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(signalled.success());
}

/// A stop (SIGTERM) answers the call in flight before the instance exits, charged once, with
/// `Connection: close`; it closes idle keep-alive connections at once rather than waiting for their timeout, and new
/// connections are refused.
#[tokio::test]
async fn a_stop_answers_the_call_in_flight_and_closes_idle_connections() {
    let (gw, key) = gateway_for_a_binary().await;
    let (mut child, port) = start_binary(&gw).await;
    let url = format!("http://127.0.0.1:{port}/api/v1/echo/x");
    // A client that keeps its connection open after its call.
    let idle_client = reqwest::Client::new();
    let response = send(idle_client.get(&url).header("X-API-Key", &key)).await;
    assert_eq!(response.status, 200, "{}", response.text);

    gw.upstream
        .set(Behaviour::Stall(Duration::from_millis(1000)));
    let in_flight = tokio::spawn(send(
        reqwest::Client::new().get(&url).header("X-API-Key", &key),
    ));
    support::eventually(
        Duration::from_secs(5),
        "the call reaches the upstream",
        || async { (gw.upstream.hits() == 2).then_some(()) },
    )
    .await;
    let stopped_at = Instant::now();
    stop(&child);

    let answer = in_flight.await.unwrap();
    assert_eq!(
        answer.status, 200,
        "the call in flight is answered: {}",
        answer.text
    );
    assert_eq!(
        answer.header("connection"),
        Some("close"),
        "its answer tells the client that the connection ends"
    );
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the instance stops")
        .unwrap();
    assert!(exit.success(), "{exit}");
    // Left open, the idle connection would hold the stop until its keep-alive ends, five
    // seconds after its call.
    assert!(
        stopped_at.elapsed() < Duration::from_secs(4),
        "the idle connection held the stop for {:?}",
        stopped_at.elapsed()
    );
    let refused = tokio::net::TcpStream::connect(("127.0.0.1", port as u16)).await;
    assert!(refused.is_err(), "a stopped instance accepts no connection");
    assert_eq!(gw.upstream.hits(), 2);
    assert_eq!(gw.balance().await, 998, "both calls charged once");
}

#[tokio::test]
async fn a_killed_instance_never_over_charges_and_its_reserve_returns() {
    let (gw, key) = gateway_for_a_binary().await;

    let (mut child, port) = start_binary(&gw).await;
    let client = reqwest::Client::new();
    let mut served = 0;
    for _ in 0..30 {
        let response = send(
            client
                .get(format!("http://127.0.0.1:{port}/api/v1/echo/x"))
                .header("X-API-Key", &key),
        )
        .await;
        if response.status == 200 {
            served += 1;
        }
    }
    assert_eq!(served, 30);
    assert!(gw.reserved().await > 0, "the instance holds a lease");
    child.kill().await.unwrap();

    // Nothing it served was settled (its tick is a minute): the worst case is an under-charge.
    assert!(gw.balance().await >= 1000 - served, "never an over-charge");
    let deadline = Instant::now() + Duration::from_secs(15);
    while gw.reserved().await > 0 {
        assert!(
            Instant::now() < deadline,
            "the dead instance's reserve never returned"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        gw.balance().await,
        1000,
        "what it did not settle is the bounded under-charge"
    );
    assert_eq!(gw.upstream.hits(), 30);
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_call_is_charged_as_the_upstream_answered_and_holds_nothing() {
    let gw = gateway().await;
    gw.fund(100).await;
    let key = gw.new_key().await;
    gw.upstream
        .set(Behaviour::Stall(Duration::from_millis(800)));
    let impatient = tokio::spawn(
        gw.app
            .request(Method::GET, "/api/v1/echo/x")
            .header("X-API-Key", &key)
            .send(),
    );
    // The client hangs up once the call has reached the upstream.
    support::eventually(
        Duration::from_secs(5),
        "the call reaches the upstream",
        || async { (gw.upstream.hits() == 1).then_some(()) },
    )
    .await;
    impatient.abort();
    assert!(impatient.await.is_err(), "the client gave up");
    // Without its hold the idle wallet gives its whole reserve back.
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.reserved().await > 0 {
        assert!(
            Instant::now() < deadline,
            "the abandoned call's hold was never released"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The upstream did answer (below 500), so the call is charged, once.
    assert_eq!(gw.upstream.hits(), 1);
    assert_eq!(gw.settled_balance(99).await, 99);
}

#[tokio::test]
async fn sql_metacharacters_in_text_fields_are_kept_as_text() {
    let gw = gateway().await;
    let nasty = "O'Brien\"; DROP TABLE users; -- \\ % _ 😀";
    let created = send(
        gw.app
            .request(Method::POST, "/myapi/keys")
            .bearer_auth(&gw.user().token)
            .json(&json!({"name": nasty})),
    )
    .await;
    assert_eq!(created.assert_ok()["name"], nasty);
    let listed = send(
        gw.app
            .request(Method::GET, "/myapi/keys")
            .bearer_auth(&gw.user().token),
    )
    .await;
    assert_eq!(listed.assert_ok()["items"][0]["name"], nasty);
    let plan = json!({"name": nasty, "plan_type": "one_time", "amount_cents": 100, "credits": 1,
        "rps_limit": 1, "rph_limit": 1, "description": nasty});
    let plan = gw
        .admin()
        .call(Method::POST, "/myapi/admin/plans", Some(plan))
        .await;
    assert_eq!(plan.assert_ok()["description"], nasty);
    let path = format!("/myapi/admin/users/{}/credits", gw.user().id);
    let adjusted = gw
        .admin()
        .call(
            Method::POST,
            &path,
            Some(json!({"amount": 5, "reason": nasty})),
        )
        .await;
    adjusted.assert_ok();
    let search = format!("/myapi/admin/users?email={}", "%27%3B%20DROP");
    assert_eq!(
        gw.admin()
            .call(Method::GET, &search, None)
            .await
            .assert_ok()["total"],
        0
    );
    send(
        gw.app
            .request(Method::GET, "/myapi/orders/'%20OR%201=1--")
            .bearer_auth(&gw.user().token),
    )
    .await
    .assert_error(404, Some(40411));
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&gw.app.pool)
        .await
        .unwrap();
    assert_eq!(
        users, 2,
        "the users table is still there, with both accounts"
    );
}

/// A key of the wrong form is refused before any look-up; keys of the right form that are not
/// found are limited per client, so a flood of random keys cannot drain the pool; a key the
/// gateway knows is still served to that client.
#[tokio::test]
async fn unknown_keys_are_refused_cheaply_and_limited_per_client() {
    let gw =
        gateway_with(TestConfig::default().var("GATEWAY_FAILED_KEYS_PER_IP_PER_MINUTE", "2")).await;
    gw.fund(10).await;
    let key = gw.new_key().await;
    call(&gw.app, &key, "/api/v1/echo/x").await.assert_ok_raw();
    // Malformed: another prefix, a short key, a long one, a character outside base64url.
    let malformed = [
        format!("xx_{}", &key[3..]),
        key[..20].to_owned(),
        format!("{key}A"),
        format!("{}*", &key[..key.len() - 1]),
    ];
    for _ in 0..3 {
        for bad in &malformed {
            call(&gw.app, bad, "/api/v1/echo/x")
                .await
                .assert_error(401, Some(40103));
        }
    }
    // Well formed but unknown: two are looked up, then the client waits.
    let unknown = |n: u8| format!("mk_{}", String::from(char::from(b'a' + n)).repeat(43));
    for n in 0..2 {
        call(&gw.app, &unknown(n), "/api/v1/echo/x")
            .await
            .assert_error(401, Some(40103));
    }
    let limited = call(&gw.app, &unknown(2), "/api/v1/echo/x").await;
    limited.assert_error(429, None);
    assert!(limited.header("retry-after").is_some());
    // The client's known key is not held back by its failures.
    call(&gw.app, &key, "/api/v1/echo/x").await.assert_ok_raw();
    assert_eq!(gw.upstream.hits(), 2);
}

/// A failed call gives back its credits and its place in the month's quota, but not its rate
/// slots: one account cannot drive a failing provider faster than its limits allow.
#[tokio::test]
async fn a_failed_call_keeps_its_rate_slot_spent() {
    let gw = gateway().await;
    gw.set_limits(2, 1000, Some(100)).await;
    gw.fund(10).await;
    let key = gw.new_key().await;
    gw.upstream.set(Behaviour::Status(503));
    for _ in 0..2 {
        call(&gw.app, &key, "/api/v1/echo/x")
            .await
            .assert_error(502, Some(50201));
    }
    gw.upstream.set(Behaviour::Echo);
    call(&gw.app, &key, "/api/v1/echo/x")
        .await
        .assert_error(429, Some(42901));
    assert_eq!(gw.upstream.hits(), 2);
    assert_eq!(
        gw.settled_balance(10).await,
        10,
        "failed calls cost nothing"
    );
}

/// After consecutive failures a provider's calls answer 50201 without reaching it, until a
/// probe after the cool-down finds it well again.
#[tokio::test]
async fn a_failing_provider_is_cut_off_then_probed() {
    let gw = gateway_with(
        TestConfig::default()
            .var("GATEWAY_BREAKER_FAILURES", "3")
            .var("GATEWAY_BREAKER_COOL_DOWN_MS", "300"),
    )
    .await;
    gw.set_limits(1000, 100_000, None).await;
    gw.fund(100).await;
    let key = gw.new_key().await;
    gw.upstream.set(Behaviour::Status(503));
    for _ in 0..5 {
        call(&gw.app, &key, "/api/v1/echo/x")
            .await
            .assert_error(502, Some(50201));
    }
    assert_eq!(
        gw.upstream.hits(),
        3,
        "the breaker opened after three failures"
    );
    gw.upstream.set(Behaviour::Echo);
    support::eventually(
        Duration::from_secs(5),
        "a probe finds the provider well",
        || async {
            let answer = call(&gw.app, &key, "/api/v1/echo/x").await;
            (answer.status == 200).then_some(())
        },
    )
    .await;
    call(&gw.app, &key, "/api/v1/echo/x").await.assert_ok_raw();
    assert_eq!(
        gw.upstream.hits(),
        5,
        "closed again: calls reach the provider"
    );
    assert_eq!(
        gw.settled_balance(98).await,
        98,
        "only the two served calls are charged"
    );
}

/// The quota comes back with the next UTC month, and `Retry-After` says when.
#[tokio::test]
async fn an_exhausted_quota_says_to_retry_at_the_start_of_the_next_month() {
    let gw = gateway().await;
    gw.fund(100).await;
    gw.set_limits(1000, 100_000, Some(2)).await;
    let key = gw.new_key().await;
    let clock = gw.app.clock();
    let now = clock.now();
    clock.advance(start_of_next_month(now) - now - chrono::Duration::seconds(100));

    for _ in 0..2 {
        call(&gw.app, &key, "/api/v1/echo/x").await.assert_ok_raw();
    }
    let refused = call(&gw.app, &key, "/api/v1/echo/x").await;
    refused.assert_error(429, Some(42903));
    let wait: i64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (90..=100).contains(&wait),
        "the month ends in ~100 s: {wait}"
    );

    clock.advance(chrono::Duration::seconds(wait));
    call(&gw.app, &key, "/api/v1/echo/x").await.assert_ok_raw();
}

/// Limits before credits before the global protection: an account out of both limits and
/// credits hears about its limits; a broke account hears about credits even when the gateway
/// as a whole is at its limit.
#[tokio::test]
async fn refusals_follow_the_contracts_order_of_checks() {
    let gw = gateway_with(TestConfig::default().var("GATEWAY_GLOBAL_RPS", "1")).await;
    gw.fund(2).await;
    gw.set_limits(1000, 100_000, Some(2)).await;
    let key = gw.new_key().await;
    for _ in 0..2 {
        // One call a second for the whole gateway: a call may have to wait for its second.
        support::eventually(Duration::from_secs(5), "a call is served", || async {
            let answer = call(&gw.app, &key, "/api/v1/echo/x").await;
            (answer.status == 200).then_some(())
        })
        .await;
    }
    // Out of credits and out of quota: the quota is named.
    call(&gw.app, &key, "/api/v1/echo/x")
        .await
        .assert_error(429, Some(42903));
    gw.set_limits(1000, 100_000, None).await;
    let broke = support::eventually(
        Duration::from_secs(5),
        "the lifted quota reaches the gateway",
        || async {
            let answer = call(&gw.app, &key, "/api/v1/echo/x").await;
            (answer.status != 429).then_some(answer)
        },
    )
    .await;
    broke.assert_error(402, Some(40201));

    // A funded account spends the gateway's one call a second; the broke one still hears 40201,
    // the funded one 50301 (two calls at once: one served, one refused; tried again when both
    // were refused because an earlier second was still spent).
    let rich = gw.app.user("rich@example.com", "user").await;
    gw.app.fund(gw.admin(), rich.id, 100).await;
    let rich_key = rich.new_key().await;
    let mut saw_global_limit = false;
    let trying = Instant::now();
    while trying.elapsed() < Duration::from_secs(10) {
        let poor = call(&gw.app, &key, "/api/v1/echo/x").await;
        poor.assert_error(402, Some(40201));
        // Two calls at once meet the limiter within the same second however slow the machine.
        let (first, second) = futures_util::future::join(
            call(&gw.app, &rich_key, "/api/v1/echo/x"),
            call(&gw.app, &rich_key, "/api/v1/echo/x"),
        )
        .await;
        let (served, refused) = if first.status == 200 {
            (first, second)
        } else {
            (second, first)
        };
        if served.status == 200 && refused.status == 503 {
            refused.assert_error(503, Some(50301));
            assert!(refused.header("retry-after").is_some());
            saw_global_limit = true;
            break;
        }
    }
    assert!(
        saw_global_limit,
        "GATEWAY_GLOBAL_RPS=1 refused a second call"
    );
    let served = gw.upstream.hits() as i64;
    let rich_balance = support::settled_balance(&gw.app.pool, rich.id, 100 - (served - 2)).await;
    assert_eq!(
        rich_balance,
        100 - (served - 2),
        "only served calls are charged; a 50301 is not"
    );
}

/// Usage per hour in a range: buckets start on the hour (RFC 3339 UTC), `from` and `to` cut.
#[tokio::test]
async fn usage_is_bucketed_by_hour_within_from_and_to() {
    let gw = gateway().await;
    gw.fund(100).await;
    gw.set_limits(1000, 100_000, None).await;
    let key = gw.new_key().await;
    let clock = gw.app.clock();
    let first_hour = clock.now();
    for _ in 0..2 {
        call(&gw.app, &key, "/api/v1/echo/x").await.assert_ok_raw();
    }
    gw.settled_balance(98).await;
    clock.advance(chrono::Duration::hours(2));
    for _ in 0..3 {
        call(&gw.app, &key, "/api/v1/echo/x").await.assert_ok_raw();
    }
    assert_eq!(gw.settled_balance(95).await, 95);

    let hour = |at: chrono::DateTime<chrono::Utc>| {
        use chrono::Timelike;
        at.with_minute(0)
            .and_then(|t| t.with_second(0))
            .and_then(|t| t.with_nanosecond(0))
            .unwrap()
    };
    let from = hour(first_hour);
    let to = hour(clock.now()) + chrono::Duration::hours(1);
    let usage = |from: chrono::DateTime<chrono::Utc>| {
        let path = format!(
            "/myapi/usage?granularity=hour&from={}&to={}",
            from.format("%Y-%m-%dT%H:%M:%SZ"),
            to.format("%Y-%m-%dT%H:%M:%SZ")
        );
        let user = gw.user().clone();
        async move { user.get(&path).await }
    };
    let buckets = support::eventually(Duration::from_secs(5), "both hours' usage", || async {
        let answer = usage(from).await;
        let items = answer.assert_ok()["items"].as_array().unwrap().clone();
        (items.len() == 2).then_some(items)
    })
    .await;
    assert_eq!(
        buckets[0]["start"],
        from.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    );
    assert_eq!(buckets[0]["calls"], 2);
    assert_eq!(
        buckets[1]["start"],
        (from + chrono::Duration::hours(2))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    );
    assert_eq!(buckets[1]["calls"], 3);
    assert_eq!(buckets[1]["credits"], 3);
    assert_eq!(buckets[1]["provider"], "echo");

    let later = usage(from + chrono::Duration::hours(1)).await;
    let items = later.assert_ok()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1, "`from` leaves the first hour out");
    assert_eq!(items[0]["calls"], 3);
}

/// A body larger than any buffer, with a length or chunked, reaches the client byte for byte.
#[tokio::test]
async fn large_and_chunked_upstream_bodies_stream_through_whole() {
    use sha2::Digest;
    let gw = gateway().await;
    gw.fund(10).await;
    let key = gw.new_key().await;
    let size = 8 * 1024 * 1024 + 17;
    let expected = sha2::Sha256::digest(support::upstream::body_bytes(size));
    for chunked in [false, true] {
        gw.upstream.set(Behaviour::Body { size, chunked });
        let response = gw
            .app
            .request(Method::GET, "/api/v1/echo/big")
            .header("X-API-Key", &key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let length = response.headers().get("content-length").cloned();
        let encoding = response.headers().get("transfer-encoding").cloned();
        if chunked {
            assert_eq!(encoding.unwrap(), "chunked");
        } else {
            assert_eq!(length.unwrap(), size.to_string().as_str());
        }
        let body = response.bytes().await.unwrap();
        assert_eq!(body.len(), size, "chunked: {chunked}");
        assert_eq!(sha2::Sha256::digest(&body), expected, "chunked: {chunked}");
    }
    assert_eq!(gw.settled_balance(8).await, 8);
}

/// A provider's body is bounded: it must start within its idle time, keep coming, end by its
/// deadline and stay under its maximum. A body that fails before the client heard anything is
/// a 50201, not charged; one that fails later is cut, and the client never sees it whole.
#[tokio::test]
async fn slow_or_oversized_upstream_bodies_are_ended() {
    let gw = gateway().await;
    gw.set_limits(1000, 100_000, None).await;
    gw.fund(100).await;
    let key = gw.new_key().await;
    let provider = json!({"slug": "bounded", "base_url": gw.upstream.base_url, "cost": 1,
        "timeout_ms": 2000, "body_idle_ms": 300, "body_deadline_ms": 1500,
        "max_response_bytes": 100_000});
    let created = gw.admin().post("/myapi/admin/providers", provider).await;
    assert_eq!(created.assert_ok()["body_idle_ms"], 300);
    let fetch = || async {
        let response = gw
            .app
            .request(Method::GET, "/api/v1/bounded/x")
            .header("X-API-Key", &key)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.bytes().await)
    };
    let trickle = |first_after: u64, every: u64, chunks: usize| Behaviour::Trickle {
        first_after: Duration::from_millis(first_after),
        every: Duration::from_millis(every),
        chunks,
    };

    // Nothing within the idle time, or a length above the maximum: 50201 before any byte.
    gw.upstream.set(trickle(3000, 0, 1));
    let (status, _) = fetch().await;
    assert_eq!(status, 502);
    gw.upstream.set(Behaviour::Body {
        size: 200_000,
        chunked: false,
    });
    call(&gw.app, &key, "/api/v1/bounded/x")
        .await
        .assert_error(502, Some(50201));
    assert_eq!(gw.settled_balance(100).await, 100, "neither is charged");

    // Started, then stalled; started, then trickling past the deadline; started, then grown
    // past the maximum: each is cut, never seen complete, and charged once (it answered).
    let cut = [
        trickle(0, 3000, 3),
        trickle(0, 100, 100),
        Behaviour::Body {
            size: 200_000,
            chunked: true,
        },
    ];
    for (charged, behaviour) in cut.into_iter().enumerate() {
        gw.upstream.set(behaviour);
        let started = Instant::now();
        let (status, body) = fetch().await;
        assert_eq!(status, 200, "{behaviour:?}");
        assert!(body.is_err(), "{behaviour:?} was cut");
        assert!(started.elapsed() < Duration::from_secs(3), "{behaviour:?}");
        let expected = 100 - (charged as i64 + 1);
        assert_eq!(gw.settled_balance(expected).await, expected);
    }

    // Within every limit the body arrives whole.
    gw.upstream.set(trickle(0, 50, 10));
    let (status, body) = fetch().await;
    assert_eq!(status, 200);
    assert_eq!(body.unwrap().len(), 10 * 1024);
    // An update without the limits keeps them.
    let update = json!({"slug": "bounded", "base_url": gw.upstream.base_url, "cost": 1,
        "timeout_ms": 2000});
    let kept = gw
        .admin()
        .put("/myapi/admin/providers/bounded", update)
        .await;
    assert_eq!(kept.assert_ok()["max_response_bytes"], 100_000);
    let bad = json!({"slug": "worse", "base_url": gw.upstream.base_url, "cost": 1,
        "timeout_ms": 2000, "body_idle_ms": 0});
    gw.admin()
        .post("/myapi/admin/providers", bad)
        .await
        .assert_error(400, None);
}

/// A customer who just paid is never told they have no money: the call right after a top-up
/// is served, on the instance that wrote it and (by notification) on the others.
#[tokio::test]
async fn a_top_up_is_usable_by_the_very_next_call() {
    let gw = gateway().await;
    gw.set_limits(1000, 100_000, None).await;
    let key = gw.new_key().await;
    let other = gw.app.another_instance(TestConfig::default()).await;
    call(&gw.app, &key, "/api/v1/echo/x")
        .await
        .assert_error(402, Some(40201));
    call(&other, &key, "/api/v1/echo/x")
        .await
        .assert_error(402, Some(40201));
    gw.fund(3).await;
    call(&gw.app, &key, "/api/v1/echo/x").await.assert_ok_raw();
    support::eventually(
        Duration::from_secs(2),
        "the other instance hears of it",
        || {
            let (other, key) = (&other, &key);
            async move { (call(other, key, "/api/v1/echo/x").await.status == 200).then_some(()) }
        },
    )
    .await;
    assert_eq!(gw.settled_balance(1).await, 1);
}

/// Every writer of what the gateway holds answers only once this instance's gateway sees the
/// change, so the very next call here is served or refused by the new state: a redemption's
/// credits, an admin's manual order, a paid Stripe checkout, a plan's new quota and its
/// removal (issue 13 point 2). Done round after round, because a writer that did not wait
/// would race the notification and win some rounds by luck.
#[tokio::test]
async fn what_a_writer_changed_reaches_the_very_next_call_here() {
    let gw = gateway().await;
    gw.set_limits(1000, 100_000, None).await;
    let key = gw.new_key().await;
    let plan = json!({"name": "One credit", "plan_type": "one_time", "amount_cents": 100,
        "credits": 1, "rps_limit": 1000, "rph_limit": 100_000});
    let plan_id = gw
        .admin()
        .call(Method::POST, "/myapi/admin/plans", Some(plan))
        .await
        .assert_ok()["id"]
        .clone();
    let batch = json!({"count": 5, "credits": 1, "note": "read your writes"});
    let batch = gw
        .admin()
        .call(Method::POST, "/myapi/admin/redemption-batches", Some(batch))
        .await;
    let codes: Vec<String> = batch.assert_ok()["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|code| code.as_str().unwrap().to_owned())
        .collect();

    let mut served = 0;
    for (round, code) in codes.iter().enumerate() {
        served_right_after(&gw, &key, &format!("round {round}: redemption"), async {
            gw.user()
                .call(Method::POST, "/myapi/redeem", Some(json!({ "code": code })))
                .await
                .assert_ok();
        })
        .await;
        served += 1;

        served_right_after(&gw, &key, &format!("round {round}: manual order"), async {
            let order = json!({"user_id": gw.user().id, "plan_id": plan_id});
            gw.admin()
                .call(Method::POST, "/myapi/admin/orders", Some(order))
                .await
                .assert_ok();
        })
        .await;
        served += 1;

        served_right_after(
            &gw,
            &key,
            &format!("round {round}: Stripe payment"),
            async {
                let order = json!({"plan_id": plan_id, "payment_method": "credit_card"});
                let order = gw
                    .user()
                    .call(Method::POST, "/myapi/orders", Some(order))
                    .await;
                let order_no = order.assert_ok()["order_no"].as_str().unwrap().to_owned();
                let session_id = gw.session_id(&order_no).await;
                let paid = completed_session(&order_no, &session_id, 100, "paid");
                gw.deliver(&event("checkout.session.completed", paid))
                    .await
                    .assert_ok();
            },
        )
        .await;
        served += 1;

        gw.fund(1).await;
        gw.set_limits(1000, 100_000, Some(served)).await;
        call(&gw.app, &key, "/api/v1/echo/x")
            .await
            .assert_error(429, Some(42903));
        gw.set_limits(1000, 100_000, None).await;
        let after_lift = call(&gw.app, &key, "/api/v1/echo/x").await;
        assert_eq!(after_lift.status, 200, "round {round}: quota lifted");
        served += 1;
    }
    assert_eq!(gw.upstream.hits(), served as usize);
    assert_eq!(gw.settled_balance(0).await, 0);
}

/// A call right before `write` is refused for credits, and the very next one after it served.
async fn served_right_after(gw: &Scene, key: &str, what: &str, write: impl Future<Output = ()>) {
    call(&gw.app, key, "/api/v1/echo/x")
        .await
        .assert_error(402, Some(40201));
    write.await;
    let answer = call(&gw.app, key, "/api/v1/echo/x").await;
    assert_eq!(answer.status, 200, "{what}");
}

/// Burst after burst, N concurrent calls on M < N credits serve exactly M, over one instance and
/// over two sharing the account.
#[tokio::test]
async fn concurrent_calls_spend_every_credit_and_no_more() {
    let gw = gateway().await;
    gw.set_limits(100_000, 1_000_000, None).await;
    let key = gw.new_key().await;
    let other = gw.app.another_instance(TestConfig::default()).await;
    let mut balance = 0;
    for (round, credits) in [1, 2, 7, 120].into_iter().enumerate() {
        for instances in [1, 2] {
            gw.fund(credits).await;
            balance += credits;
            let calls = credits as usize * 3 + 10;
            let answers = futures_util::future::join_all((0..calls).map(|i| {
                let app = if instances == 2 && i % 2 == 1 {
                    &other
                } else {
                    &gw.app
                };
                call(app, &key, "/api/v1/echo/x")
            }))
            .await;
            let served = answers.iter().filter(|a| a.status == 200).count() as i64;
            for refused in answers.iter().filter(|a| a.status != 200) {
                refused.assert_error(402, Some(40201));
            }
            assert_eq!(
                served, credits,
                "round {round}, {instances} instance(s): {credits} credits"
            );
            balance -= served;
            assert_eq!(gw.settled_balance(balance).await, balance);
        }
    }
}

/// A settlement that fails keeps the usage it took out, and the next one writes it: calls and
/// the month's quota are never under-counted.
#[tokio::test]
async fn usage_survives_a_failed_settlement() {
    let gw = gateway().await;
    gw.set_limits(1000, 100_000, None).await;
    gw.fund(50).await;
    let key = gw.new_key().await;
    sqlx::raw_sql(
        r#"CREATE FUNCTION fail_usage() RETURNS trigger AS $$
           BEGIN RAISE EXCEPTION 'injected failure'; END; $$ LANGUAGE plpgsql;
           CREATE TRIGGER fail_usage BEFORE INSERT OR UPDATE ON usage_hourly
               FOR EACH ROW EXECUTE FUNCTION fail_usage();"#,
    )
    .execute(&gw.app.pool)
    .await
    .unwrap();
    for _ in 0..5 {
        call(&gw.app, &key, "/api/v1/echo/x").await.assert_ok_raw();
    }
    // Settlements fail for a while (the log says so); nothing is written.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gw.app.count("usage_hourly").await, 0);
    assert_eq!(gw.balance().await, 50);
    sqlx::raw_sql("DROP TRIGGER fail_usage ON usage_hourly")
        .execute(&gw.app.pool)
        .await
        .unwrap();
    assert_eq!(gw.settled_balance(45).await, 45);
    let calls: i64 = support::eventually(Duration::from_secs(5), "the usage is written", || {
        let pool = &gw.app.pool;
        async move {
            let calls: i64 =
                sqlx::query_scalar("SELECT COALESCE(sum(calls), 0)::bigint FROM usage_hourly")
                    .fetch_one(pool)
                    .await
                    .unwrap();
            (calls > 0).then_some(calls)
        }
    })
    .await;
    assert_eq!(calls, 5, "every call counted once");
}

/// A plan's new limits reach every instance by notification, not at the next periodic reload.
#[tokio::test]
async fn new_limits_reach_every_instance_at_once() {
    let gw = gateway().await;
    gw.fund(100).await;
    gw.set_limits(3, 100_000, None).await;
    let key = gw.new_key().await;
    let other = gw.app.another_instance(TestConfig::default()).await;
    let first = call(&other, &key, "/api/v1/echo/x").await;
    assert_eq!(first.header("x-ratelimit-limit"), Some("3"));
    gw.set_limits(9, 100_000, None).await;
    // The periodic reload is every five seconds; a notification takes milliseconds.
    support::eventually(
        Duration::from_secs(2),
        "the new limit on the other instance",
        || {
            let (other, key) = (&other, &key);
            async move {
                let answer = call(other, key, "/api/v1/echo/x").await;
                (answer.header("x-ratelimit-limit") == Some("9")).then_some(())
            }
        },
    )
    .await;
}

/// An account loaded in one month with calls already counted starts the next month from zero
/// in the shared (Redis) counter too.
#[tokio::test]
async fn a_new_month_starts_the_shared_quota_from_zero() {
    let Some(redis) = support::redis_url("a_new_month_starts_the_shared_quota_from_zero") else {
        return;
    };
    let gw = gateway_with(sharing_redis(redis)).await;
    gw.fund(100).await;
    gw.set_limits(1000, 100_000, Some(2)).await;
    let key = gw.new_key().await;
    for _ in 0..2 {
        call(&gw.app, &key, "/api/v1/echo/x").await.assert_ok_raw();
    }
    assert_eq!(gw.settled_balance(98).await, 98);
    // A second instance loads the account now: the month's two calls are its seed.
    let other = gw.app.another_instance(TestConfig::default()).await;
    call(&other, &key, "/api/v1/echo/x")
        .await
        .assert_error(429, Some(42903));
    let clock = other.clock();
    let now = clock.now();
    clock.advance(start_of_next_month(now) - now + chrono::Duration::seconds(1));
    call(&other, &key, "/api/v1/echo/x").await.assert_ok_raw();
}

/// Many accounts served in the same ticks are settled together, each exactly: every call
/// charged once to its own account, every usage row counted.
/// Cold accounts that need credits at the same moment are reserved together (one transaction
/// for the batch); each gets only its own: 5 calls at once from each of 60 new accounts holding
/// 0 to 3 credits serve exactly the credits each holds.
#[tokio::test]
async fn cold_accounts_reserved_together_each_spend_exactly_their_own_credits() {
    let config = TestConfig::default().var("AUTH_LOGIN_PER_IP_PER_MINUTE", "1000");
    let gw = gateway_with(config).await;
    gw.set_limits(1000, 100_000, None).await;
    let mut callers = Vec::new();
    for i in 0..60i64 {
        let user = gw.app.user(&format!("cold{i}@example.com"), "user").await;
        let credits = i % 4;
        if credits > 0 {
            gw.app.fund(gw.admin(), user.id, credits).await;
        }
        callers.push((user.id, user.new_key().await, credits));
    }
    let app = &gw.app;
    let calls = callers.iter().flat_map(|(_, key, _)| {
        (0..5).map(move |_| async move { (key, call(app, key, "/api/v1/echo/x").await) })
    });
    let answers = futures_util::future::join_all(calls).await;
    for (user_id, key, credits) in &callers {
        let mine: Vec<_> = answers.iter().filter(|(k, _)| *k == key).collect();
        let served = mine.iter().filter(|(_, a)| a.status == 200).count() as i64;
        for (_, refused) in mine.iter().filter(|(_, a)| a.status != 200) {
            refused.assert_error(402, Some(40201));
        }
        assert_eq!(served, *credits, "an account holding {credits} credits");
        assert_eq!(support::settled_balance(&gw.app.pool, *user_id, 0).await, 0);
    }
    let total: i64 = callers.iter().map(|(_, _, credits)| credits).sum();
    assert_eq!(gw.upstream.hits() as i64, total);
}

/// A quiet account with a large balance reserves a hundred calls' worth at its first call
/// (sized by the balance its account load found), and keeps that small share of its credits
/// through idle ticks; an account whose lease is a large share of its credits gives it back
/// after ten idle ticks, for whichever instance needs it.
#[tokio::test]
async fn a_rich_quiet_account_reserves_a_hundred_calls_at_once_and_keeps_them_while_idle() {
    let config = TestConfig::default().var("AUTH_LOGIN_PER_IP_PER_MINUTE", "1000");
    let gw = gateway_with(config).await;
    gw.set_limits(1000, 100_000, None).await;
    let rich = gw.app.user("rich@example.com", "user").await;
    gw.app.fund(gw.admin(), rich.id, 64_000).await;
    let poor = gw.app.user("poor@example.com", "user").await;
    gw.app.fund(gw.admin(), poor.id, 100).await;
    let reserved = |user_id| support::credit_account(&gw.app.pool, user_id, "reserved");
    let poor_key = poor.new_key().await;
    for key in [&rich.new_key().await, &poor_key] {
        call(&gw.app, key, "/api/v1/echo/x").await.assert_ok_raw();
    }
    // What the lease took in all, whether or not a tick settled the call meanwhile.
    let pool = &gw.app.pool;
    let leased = |user_id, funded: i64| async move {
        sqlx::query_scalar::<_, i64>(
            "SELECT reserved + $2 - balance FROM credit_accounts WHERE user_id = $1",
        )
        .bind(user_id)
        .bind(funded)
        .fetch_one(pool)
        .await
        .unwrap()
    };
    assert_eq!(
        leased(rich.id, 64_000).await,
        100,
        "a hundred calls, not ten"
    );
    assert_eq!(
        leased(poor.id, 100).await,
        10,
        "ten calls of a hundred credits"
    );
    assert_eq!(
        support::settled_balance(&gw.app.pool, rich.id, 63_999).await,
        63_999
    );
    // Ten idle ticks of 100 ms, and twenty more: the small share stays.
    support::eventually(
        Duration::from_secs(10),
        "the poor account's lease goes back",
        || async { (reserved(poor.id).await == 0).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        reserved(rich.id).await,
        99,
        "the rich account's lease is kept"
    );
    assert_eq!(
        support::settled_balance(&gw.app.pool, poor.id, 99).await,
        99
    );
    // A lease after one went back is a new one, and its calls are charged like the first's.
    call(&gw.app, &poor_key, "/api/v1/echo/x")
        .await
        .assert_ok_raw();
    assert_eq!(
        support::settled_balance(&gw.app.pool, poor.id, 98).await,
        98
    );
    assert_eq!(gw.upstream.hits(), 3);
}

#[tokio::test]
async fn a_crowd_of_first_calls_on_cold_accounts_holds_one_lease_each_and_is_charged_exactly() {
    let config = TestConfig::default().var("AUTH_LOGIN_PER_IP_PER_MINUTE", "1000");
    let gw = gateway_with(config).await;
    gw.set_limits(1000, 100_000, None).await;
    let mut accounts = Vec::new();
    for i in 0..10 {
        let user = gw.app.user(&format!("crowd{i}@example.com"), "user").await;
        gw.app.fund(gw.admin(), user.id, 5_000).await;
        accounts.push((user.id, [user.new_key().await, user.new_key().await]));
    }
    // Eight first calls on each cold account at once, four with each of two cold keys: the
    // account loads (each reserving a first lease, with a key's load or alone) race, and
    // every grant must end in the one lease of the account.
    let app = &gw.app;
    let calls = accounts.iter().flat_map(|(_, keys)| {
        keys.iter()
            .flat_map(move |key| (0..4).map(move |_| call(app, key, "/api/v1/echo/x")))
    });
    for answer in futures_util::future::join_all(calls).await {
        answer.assert_ok_raw();
    }
    let pool = &gw.app.pool;
    for (user_id, _) in &accounts {
        assert_eq!(support::settled_balance(pool, *user_id, 4_992).await, 4_992);
        let (leases, held, reserved): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM credit_leases WHERE user_id = $1), \
                    (SELECT COALESCE(sum(amount - settled), 0)::bigint FROM credit_leases \
                     WHERE user_id = $1), \
                    (SELECT reserved FROM credit_accounts WHERE user_id = $1)",
        )
        .bind(user_id)
        .fetch_one(pool)
        .await
        .unwrap();
        // (No lease at all once an idle one went back, which a slow machine may reach.)
        assert!(
            leases <= 1,
            "one lease per account and instance, not {leases}"
        );
        assert_eq!(held, reserved, "the reserve is what the lease holds");
    }
    assert_eq!(gw.upstream.hits(), 80);
}

#[tokio::test]
async fn many_accounts_settle_together_and_exactly() {
    let config = TestConfig::default().var("AUTH_LOGIN_PER_IP_PER_MINUTE", "1000");
    let gw = gateway_with(config).await;
    gw.set_limits(1000, 100_000, None).await;
    let mut callers = Vec::new();
    for i in 0..120 {
        let user = gw.app.user(&format!("many{i}@example.com"), "user").await;
        gw.app.fund(gw.admin(), user.id, 10).await;
        let key = user.new_key().await;
        callers.push((user.id, key));
    }
    let app = &gw.app;
    let calls = callers
        .iter()
        .flat_map(|(_, key)| (0..3).map(move |_| call(app, key, "/api/v1/echo/x")));
    let answers = futures_util::future::join_all(calls).await;
    assert!(answers.iter().all(|answer| answer.status == 200));
    for (user_id, _) in &callers {
        assert_eq!(support::settled_balance(&gw.app.pool, *user_id, 7).await, 7);
    }
    let counted: i64 = support::eventually(Duration::from_secs(5), "all usage written", || {
        let pool = &gw.app.pool;
        async move {
            let calls: i64 =
                sqlx::query_scalar("SELECT COALESCE(sum(calls), 0)::bigint FROM usage_hourly")
                    .fetch_one(pool)
                    .await
                    .unwrap();
            (calls >= 360).then_some(calls)
        }
    })
    .await;
    assert_eq!(counted, 360);
    let charged: i64 = sqlx::query_scalar(
        "SELECT COALESCE(-sum(amount), 0)::bigint FROM ledger_entries WHERE reason = 'usage'",
    )
    .fetch_one(&gw.app.pool)
    .await
    .unwrap();
    assert_eq!(charged, 360, "each call charged once");
    assert_eq!(gw.upstream.hits(), 360);
}
