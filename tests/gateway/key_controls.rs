//! API-key controls (issue 14 points 6-8): expiry, providers, client networks and a per-key
//! rate, applied by every call at once; rotation with a grace period; usage and totals per key.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::support::scene::Scene;
use super::support::{TestApp, TestConfig, TestResponse, eventually, send};
use super::{call, gateway, gateway_with};

impl Scene {
    async fn key_id(&self, secret: &str) -> String {
        let keys = self.user().call(Method::GET, "/myapi/keys", None).await;
        let items = keys.assert_ok()["items"].as_array().unwrap().clone();
        items
            .iter()
            .find(|key| secret.starts_with(key["prefix"].as_str().unwrap()))
            .map(|key| key["id"].as_str().unwrap().to_owned())
            .expect("the key is listed")
    }

    async fn patch_key(&self, key_id: &str, change: Value) -> TestResponse {
        let path = format!("/myapi/keys/{key_id}");
        self.user().call(Method::PATCH, &path, Some(change)).await
    }

    /// The key's `spend_cap` as its owner sees it in the key list.
    async fn spend_cap(&self, key_id: &str) -> Value {
        let keys = self.user().call(Method::GET, "/myapi/keys", None).await;
        let items = keys.assert_ok()["items"].as_array().unwrap().clone();
        let key = items.iter().find(|key| key["id"] == key_id).unwrap();
        key["spend_cap"].clone()
    }

    async fn rotate(&self, key_id: &str, grace_seconds: i64) -> TestResponse {
        let path = format!("/myapi/keys/{key_id}/rotate");
        let body = json!({ "grace_seconds": grace_seconds });
        self.user().call(Method::POST, &path, Some(body)).await
    }
}

/// A call the gateway forwarded: the upstream's 200.
fn served(answer: TestResponse) {
    assert_eq!(answer.status, 200, "{}", answer.text);
}

#[tokio::test]
async fn every_worker_applies_a_keys_change_and_its_revocation_at_once() {
    // Each worker keeps its own copy of the keys its calls met: a change must reach them all.
    let gw = gateway_with(TestConfig::default().var("HTTP_WORKERS", "2")).await;
    gw.set_limits(1000, 100_000, None).await;
    gw.fund(100).await;
    let key = gw.new_key().await;
    let key_id = gw.key_id(&key).await;
    // Sixteen connections, which the kernel spreads over the two workers' listeners (all on
    // one worker: one chance in 32,768).
    let connections: Vec<reqwest::Client> = (0..16).map(|_| reqwest::Client::new()).collect();
    let url = format!("{}/api/v1/echo/a", gw.app.address);
    let call_on_each = || async {
        let calls = connections
            .iter()
            .map(|connection| send(connection.get(&url).header("X-API-Key", &key)));
        futures_util::future::join_all(calls).await
    };
    for answer in call_on_each().await {
        served(answer);
    }

    gw.patch_key(&key_id, json!({"providers": ["other"]}))
        .await
        .assert_ok();
    for answer in call_on_each().await {
        answer.assert_error(403, Some(40304));
    }
    gw.patch_key(&key_id, json!({"providers": null}))
        .await
        .assert_ok();
    for answer in call_on_each().await {
        served(answer);
    }

    let path = format!("/myapi/keys/{key_id}");
    gw.user()
        .call(Method::DELETE, &path, None)
        .await
        .assert_ok();
    for answer in call_on_each().await {
        answer.assert_error(401, Some(40103));
    }
    assert_eq!(
        gw.settled_balance(100 - 32).await,
        100 - 32,
        "the two rounds served are charged, and only they"
    );
}

#[tokio::test]
async fn a_keys_controls_refuse_the_calls_outside_them_at_once() {
    let gw = gateway().await;
    gw.set_limits(1000, 100_000, None).await;
    gw.fund(100).await;
    let key = gw.new_key().await;
    let key_id = gw.key_id(&key).await;
    served(call(&gw.app, &key, "/api/v1/echo/a").await);

    gw.patch_key(&key_id, json!({"providers": ["other"]}))
        .await
        .assert_ok();
    call(&gw.app, &key, "/api/v1/echo/a")
        .await
        .assert_error(403, Some(40304));
    let changed = gw
        .patch_key(
            &key_id,
            json!({"providers": null, "allowed_ips": ["10.0.0.0/8"]}),
        )
        .await;
    assert_eq!(changed.assert_ok()["providers"], Value::Null);
    call(&gw.app, &key, "/api/v1/echo/a")
        .await
        .assert_error(403, Some(40303));
    let changed = gw
        .patch_key(
            &key_id,
            json!({"allowed_ips": ["127.0.0.1", "::1"], "name": "ci"}),
        )
        .await;
    let view = changed.assert_ok();
    assert_eq!(view["allowed_ips"], json!(["127.0.0.1/32", "::1/128"]));
    assert_eq!(view["name"], "ci");
    served(call(&gw.app, &key, "/api/v1/echo/a").await);

    // Its own rate, below the plan's: of three calls at once, at most one in the second.
    gw.patch_key(&key_id, json!({"rps_limit": 1}))
        .await
        .assert_ok();
    let burst: Vec<_> = (0..3)
        .map(|_| call(&gw.app, &key, "/api/v1/echo/a"))
        .collect();
    let answers = futures_util::future::join_all(burst).await;
    let refused = answers.iter().filter(|a| a.status == 429).count();
    assert!(
        refused >= 2,
        "{:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    for answer in answers.iter().filter(|a| a.status == 429) {
        answer.assert_error(429, Some(42901));
    }
    gw.patch_key(&key_id, json!({"rps_limit": null}))
        .await
        .assert_ok();

    // An expiry: in the future it changes nothing; once passed, 40103 on every instance.
    let soon = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let view = gw.patch_key(&key_id, json!({"expires_at": soon})).await;
    assert!(view.assert_ok()["expires_at"].is_string());
    served(call(&gw.app, &key, "/api/v1/echo/a").await);
    sqlx::query(
        "UPDATE api_keys SET expires_at = now() - interval '1 second', changed_at = now() \
         WHERE id = $1::uuid",
    )
    .bind(&key_id)
    .execute(&gw.app.pool)
    .await
    .unwrap();
    let expired = eventually(Duration::from_secs(10), "the expiry applied", || async {
        let answer = call(&gw.app, &key, "/api/v1/echo/a").await;
        (answer.status == 401).then_some(answer)
    })
    .await;
    expired.assert_error(401, Some(40103));
    assert!(expired.text.contains("expired"), "{}", expired.text);
}

#[tokio::test]
async fn key_changes_are_validated_and_for_the_owner_only() {
    let gw = gateway().await;
    let key = gw.new_key().await;
    let key_id = gw.key_id(&key).await;
    for (change, field) in [
        (json!({"name": " "}), "name"),
        (json!({"rps_limit": 0}), "rps_limit"),
        (json!({"allowed_ips": ["not an address"]}), "allowed_ips"),
        (json!({"providers": ["Not A Slug"]}), "providers"),
        (json!({"expires_at": "2020-01-01T00:00:00Z"}), "expires_at"),
        (
            json!({"spend_cap": {"credits": 0, "period": "month"}}),
            "spend_cap",
        ),
        (
            json!({"spend_cap": {"credits": 10, "period": "week"}}),
            "period",
        ),
    ] {
        let refused = gw.patch_key(&key_id, change).await;
        refused.assert_error(400, None);
        assert!(refused.text.contains(field), "{}", refused.text);
    }
    gw.rotate(&key_id, 86_401).await.assert_error(400, None);
    let other = gw.app.user("someone.else@example.com", "user").await;
    let path = format!("/myapi/keys/{key_id}");
    let theirs = other
        .call(Method::PATCH, &path, Some(json!({"name": "mine"})))
        .await;
    theirs.assert_error(403, Some(40302));
}

#[tokio::test]
async fn a_rotated_keys_previous_secret_works_for_its_grace_and_no_longer() {
    let gw = gateway().await;
    gw.set_limits(1000, 100_000, None).await;
    gw.fund(100).await;
    let first = gw.new_key().await;
    let key_id = gw.key_id(&first).await;
    served(call(&gw.app, &first, "/api/v1/echo/a").await);

    let rotated = gw.rotate(&key_id, 3600).await;
    let second = rotated.assert_ok()["key"].as_str().unwrap().to_owned();
    assert_eq!(rotated.json["data"]["id"], key_id.as_str());
    served(call(&gw.app, &second, "/api/v1/echo/a").await);
    served(call(&gw.app, &first, "/api/v1/echo/a").await);
    // The grace ends: the first secret is refused, the second still works.
    sqlx::query(
        "UPDATE api_keys SET previous_expires_at = now() - interval '1 second', \
         changed_at = now() WHERE id = $1::uuid",
    )
    .bind(&key_id)
    .execute(&gw.app.pool)
    .await
    .unwrap();
    eventually(Duration::from_secs(10), "the grace ended", || async {
        let answer = call(&gw.app, &first, "/api/v1/echo/a").await;
        (answer.status == 401).then_some(())
    })
    .await;
    served(call(&gw.app, &second, "/api/v1/echo/a").await);

    // No grace: the second secret stops at once.
    let third = gw.rotate(&key_id, 0).await.assert_ok()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    call(&gw.app, &second, "/api/v1/echo/a")
        .await
        .assert_error(401, Some(40103));
    served(call(&gw.app, &third, "/api/v1/echo/a").await);
}

#[tokio::test]
async fn usage_and_this_months_totals_are_kept_per_key() {
    let gw = gateway().await;
    gw.set_limits(1000, 100_000, None).await;
    gw.fund(100).await;
    let busy = gw.new_key().await;
    let quiet = gw.new_key().await;
    for _ in 0..3 {
        served(call(&gw.app, &busy, "/api/v1/echo/a").await);
    }
    served(call(&gw.app, &quiet, "/api/v1/echo/a").await);
    let busy_id = gw.key_id(&busy).await;
    let quiet_id = gw.key_id(&quiet).await;
    let path = format!("/myapi/usage?key_id={busy_id}");
    let calls = eventually(Duration::from_secs(10), "the usage settled", || async {
        let usage = gw.user().call(Method::GET, &path, None).await;
        let items = usage.assert_ok()["items"].as_array().unwrap().clone();
        let calls: i64 = items.iter().map(|b| b["calls"].as_i64().unwrap()).sum();
        (calls == 3).then_some(calls)
    })
    .await;
    assert_eq!(calls, 3);
    let totals = |id: String| {
        let gw = &gw;
        async move {
            let keys = gw.user().call(Method::GET, "/myapi/keys", None).await;
            let items = keys.assert_ok()["items"].as_array().unwrap().clone();
            let key = items
                .iter()
                .find(|key| key["id"] == id.as_str())
                .unwrap()
                .clone();
            let calls = key["calls_this_month"].as_i64().unwrap();
            (calls, key["credits_this_month"].as_i64().unwrap())
        }
    };
    assert_eq!(totals(busy_id.clone()).await, (3, 3));
    // The quiet key's call may settle a tick later than the busy key's.
    let quiet_totals = eventually(Duration::from_secs(10), "the quiet key settled", || async {
        let quiet = totals(quiet_id.clone()).await;
        (quiet.0 == 1).then_some(quiet)
    })
    .await;
    assert_eq!(quiet_totals, (1, 1));
    let last_ip = eventually(Duration::from_secs(10), "last_ip flushed", || async {
        let keys = gw.user().call(Method::GET, "/myapi/keys", None).await;
        let items = keys.assert_ok()["items"].as_array().unwrap().clone();
        let key = items
            .iter()
            .find(|key| key["id"] == busy_id.as_str())
            .unwrap()
            .clone();
        key["last_ip"].as_str().map(str::to_owned)
    })
    .await;
    assert_eq!(last_ip, "127.0.0.1");
}

/// `n` calls at once, alternating between `instances`; how many were served. Every refusal is
/// the spend cap's.
async fn capped_burst(instances: &[&TestApp], key: &str, n: usize) -> i64 {
    let answers = futures_util::future::join_all(
        (0..n).map(|i| call(instances[i % instances.len()], key, "/api/v1/echo/x")),
    )
    .await;
    for refused in answers.iter().filter(|answer| answer.status != 200) {
        refused.assert_error(403, Some(40305));
    }
    answers.iter().filter(|answer| answer.status == 200).count() as i64
}

/// Burst after burst, N concurrent calls with a key capped at M < N credits serve exactly M,
/// over one instance and over two, while the account has credits to spare.
#[tokio::test]
async fn concurrent_calls_never_pass_a_keys_spend_cap() {
    let gw = gateway().await;
    gw.set_limits(100_000, 1_000_000, None).await;
    gw.fund(10_000).await;
    let other = gw.app.another_instance(Default::default()).await;
    let mut spent = 0;
    for (round, cap) in [1, 2, 7, 60].into_iter().enumerate() {
        for instances in [vec![&gw.app], vec![&gw.app, &other]] {
            // A new key each time, capped before its first call on either instance.
            let key = gw.new_key().await;
            let key_id = gw.key_id(&key).await;
            let period = if round % 2 == 0 { "month" } else { "total" };
            gw.patch_key(
                &key_id,
                json!({"spend_cap": {"credits": cap, "period": period}}),
            )
            .await
            .assert_ok();
            let served = capped_burst(&instances, &key, cap as usize * 3 + 10).await;
            assert_eq!(
                served,
                cap,
                "round {round}, {} instance(s): a cap of {cap}",
                instances.len()
            );
            // Later calls are refused too, and the cap shows what the key spent.
            assert_eq!(capped_burst(&instances, &key, 3).await, 0);
            spent += served;
            assert_eq!(gw.settled_balance(10_000 - spent).await, 10_000 - spent);
            let shown = eventually(Duration::from_secs(10), "the spending settled", || async {
                let shown = gw.spend_cap(&key_id).await;
                (shown["spent"] == cap).then_some(shown)
            })
            .await;
            assert_eq!(
                shown,
                json!({"credits": cap, "period": period, "spent": cap})
            );
        }
    }
}

/// A cap counts what the key spent before it was set, applies a change at once (a lowered cap
/// drops what the instance had reserved under the old one), and is cleared with null.
#[tokio::test]
async fn a_spend_cap_counts_the_keys_spending_and_follows_its_changes() {
    let gw = gateway().await;
    gw.set_limits(100_000, 1_000_000, None).await;
    gw.fund(1000).await;
    let key = gw.new_key().await;
    let other_key = gw.new_key().await;
    let key_id = gw.key_id(&key).await;
    assert_eq!(gw.spend_cap(&key_id).await, Value::Null);
    for _ in 0..3 {
        served(call(&gw.app, &key, "/api/v1/echo/a").await);
    }
    eventually(Duration::from_secs(10), "the calls settled", || async {
        let shown = gw.user().call(Method::GET, "/myapi/keys", None).await;
        let text = shown.text.clone();
        text.contains("\"credits_this_month\":3").then_some(())
    })
    .await;

    let capped = gw
        .patch_key(
            &key_id,
            json!({"spend_cap": {"credits": 5, "period": "month"}}),
        )
        .await;
    assert_eq!(
        capped.assert_ok()["spend_cap"],
        json!({"credits": 5, "period": "month", "spent": 3})
    );
    served(call(&gw.app, &key, "/api/v1/echo/a").await);
    served(call(&gw.app, &key, "/api/v1/echo/a").await);
    let refused = call(&gw.app, &key, "/api/v1/echo/a").await;
    refused.assert_error(403, Some(40305));
    assert!(refused.text.contains("spend cap"), "{}", refused.text);
    // The account's other keys are not capped.
    served(call(&gw.app, &other_key, "/api/v1/echo/a").await);

    // Raised: usable by the very next call.
    gw.patch_key(
        &key_id,
        json!({"spend_cap": {"credits": 100, "period": "total"}}),
    )
    .await
    .assert_ok();
    served(call(&gw.app, &key, "/api/v1/echo/a").await);
    // Lowered under what this instance reserved with that call: one more, then refused.
    gw.patch_key(
        &key_id,
        json!({"spend_cap": {"credits": 7, "period": "total"}}),
    )
    .await
    .assert_ok();
    served(call(&gw.app, &key, "/api/v1/echo/a").await);
    call(&gw.app, &key, "/api/v1/echo/a")
        .await
        .assert_error(403, Some(40305));

    let cleared = gw.patch_key(&key_id, json!({"spend_cap": null})).await;
    assert_eq!(cleared.assert_ok()["spend_cap"], Value::Null);
    served(call(&gw.app, &key, "/api/v1/echo/a").await);
    // Eight calls with the key and one with the other.
    assert_eq!(gw.settled_balance(991).await, 991);
}
