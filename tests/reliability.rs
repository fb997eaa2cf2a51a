//! What the service promises under failure and attack: a database outage answered and
//! recovered from, webhook effects that fail leaving nothing behind, and logs without secrets.

mod support;

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use support::scene::Scene;
use support::{TestConfig, send, spawn_app_with};

#[tokio::test]
async fn a_database_outage_is_answered_with_503_and_recovered_from_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Declared after `dir`, so it is dropped first: the server stops before its directory goes.
    let cluster = support::ClusterGuard(
        meterapi::db::EmbeddedCluster::new(&dir.path().join("postgres")).unwrap(),
    );
    cluster.0.start().await.unwrap();
    cluster.0.ensure_database("outage").await.unwrap();
    let url = cluster.0.url("outage");
    let data_dir = dir.path().display().to_string();
    let vars = std::collections::HashMap::from([
        ("APP_ENV", "test"),
        ("LISTEN_ADDR", "127.0.0.1:0"),
        ("HTTP_WORKERS", "1"),
        ("DATA_DIR", data_dir.as_str()),
        ("DATABASE_URL", url.as_str()),
    ]);
    let settings =
        meterapi::Settings::from_lookup(|name| vars.get(name).map(|v| v.to_string())).unwrap();
    let application = meterapi::Application::build(settings).await.unwrap();
    let base = format!("http://127.0.0.1:{}", application.port());
    let handle = application.handle();
    tokio::spawn(application.run_until_stopped());
    let client = reqwest::Client::new();
    send(client.get(format!("{base}/myapi/plans")))
        .await
        .assert_ok();

    // Load runs from before the outage until, after the recovery, it is served again (or a
    // minute, whatever the machine's speed): every answer is a 200 or a 503, none slower than
    // the acquire timeout allows. The database stays down until the load has met the outage
    // itself, so the test does not depend on how the two are scheduled.
    let recovered = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let outages_seen = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let load = {
        let (client, base) = (client.clone(), base.clone());
        let (recovered, outages_seen) = (recovered.clone(), outages_seen.clone());
        tokio::spawn(async move {
            use std::sync::atomic::Ordering::SeqCst;
            let mut slowest = Duration::ZERO;
            let mut statuses = std::collections::BTreeMap::new();
            let give_up = Instant::now() + Duration::from_secs(60);
            while Instant::now() < give_up {
                let after_recovery = recovered.load(SeqCst);
                let started = Instant::now();
                let answer = send(client.get(format!("{base}/myapi/plans"))).await;
                slowest = slowest.max(started.elapsed());
                *statuses.entry(answer.status).or_insert(0u32) += 1;
                if answer.status == 503 {
                    outages_seen.fetch_add(1, SeqCst);
                }
                if after_recovery && answer.status == 200 {
                    break;
                }
            }
            (slowest, statuses)
        })
    };
    cluster.0.stop().await.unwrap();
    for path in ["/myapi/plans", "/readyz", "/myapi/plans"] {
        let started = Instant::now();
        let answer = send(client.get(format!("{base}{path}"))).await;
        answer.assert_error(503, None);
        assert!(
            answer.header("retry-after").is_some(),
            "503 carries Retry-After"
        );
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "{path} took {:?}",
            started.elapsed()
        );
    }
    // A login during the outage is refused the same way, and the process itself stays up.
    let login = json!({"email": "nobody@example.com", "password": "whatever1"});
    send(client.post(format!("{base}/myapi/auth/login")).json(&login))
        .await
        .assert_error(503, None);
    send(client.get(format!("{base}/healthz")))
        .await
        .assert_ok();

    support::eventually(
        Duration::from_secs(30),
        "the load meets the outage",
        || async { (outages_seen.load(std::sync::atomic::Ordering::SeqCst) > 0).then_some(()) },
    )
    .await;

    cluster.0.start().await.unwrap();
    support::eventually(Duration::from_secs(10), "the service recovers", || async {
        let answer = send(client.get(format!("{base}/myapi/plans"))).await;
        (answer.status == 200).then_some(())
    })
    .await;
    // The load sees the recovery too before it stops.
    support::eventually(
        Duration::from_secs(10),
        "the load sees a 200 again",
        || async {
            let answer = send(client.get(format!("{base}/readyz"))).await;
            (answer.status == 200).then_some(())
        },
    )
    .await;
    recovered.store(true, std::sync::atomic::Ordering::SeqCst);
    let (slowest, statuses) = load.await.unwrap();
    assert!(
        statuses
            .keys()
            .all(|status| *status == 200 || *status == 503),
        "{statuses:?}"
    );
    assert!(
        statuses.contains_key(&503),
        "the load met the outage: {statuses:?}"
    );
    assert!(
        statuses.contains_key(&200),
        "the load was served: {statuses:?}"
    );
    assert!(
        slowest < Duration::from_millis(2500),
        "a call under load took {slowest:?}"
    );
    handle.stop(true).await;
}

#[tokio::test]
async fn a_webhook_whose_effect_fails_records_nothing_and_its_retry_succeeds() {
    let scene = Scene::start().await;
    let app = &scene.app;
    let plan = json!({"name": "Pack", "plan_type": "one_time", "amount_cents": 500, "credits": 50,
        "rps_limit": 1, "rph_limit": 1});
    let plan = scene.admin().post("/myapi/admin/plans", plan).await;
    let plan_id = plan.assert_ok()["id"].as_i64().unwrap();
    let order = scene
        .user()
        .post("/myapi/orders", json!({"plan_id": plan_id}))
        .await;
    let order_no = order.assert_ok()["order_no"].as_str().unwrap().to_owned();

    // The ledger refuses every write, as a failing disk or a bug would.
    sqlx::raw_sql(
        r#"CREATE FUNCTION fail_ledger() RETURNS trigger AS $$
           BEGIN RAISE EXCEPTION 'injected failure'; END; $$ LANGUAGE plpgsql;
           CREATE TRIGGER fail_ledger BEFORE INSERT ON ledger_entries
               FOR EACH ROW EXECUTE FUNCTION fail_ledger();"#,
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let mut session = support::stripe::fixture("checkout.session");
    session["client_reference_id"] = json!(order_no);
    session["metadata"] = json!({"order_no": order_no});
    session["payment_status"] = json!("paid");
    session["amount_total"] = json!(500);
    session["currency"] = json!("usd");
    let event = json!({"id": "evt_retry", "object": "event", "type": "checkout.session.completed",
        "created": chrono::Utc::now().timestamp(), "data": {"object": session}});
    scene.deliver(&event).await.assert_error(500, None);
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM stripe_events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(recorded, 0, "a failed effect records no event");
    let status: String = sqlx::query_scalar("SELECT status FROM orders")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(status, "pending", "no half-applied effect");

    sqlx::raw_sql("DROP TRIGGER fail_ledger ON ledger_entries")
        .execute(&app.pool)
        .await
        .unwrap();
    scene.deliver(&event).await.assert_ok();
    let status: String = sqlx::query_scalar("SELECT status FROM orders")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(status, "paid");
    let balance: i64 = sqlx::query_scalar("SELECT balance FROM credit_accounts")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(balance, 50);
}

#[tokio::test]
async fn no_password_token_key_or_full_email_reaches_a_log_line() {
    let harness = spawn_app_with(TestConfig::default()).await;
    let data_dir = tempfile::tempdir().unwrap();
    let upstream = support::upstream::Upstream::start().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_meterapi"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("APP_ENV", "development")
        .env("RUST_LOG", "debug")
        .env("DATABASE_URL", harness.database_url().await)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("DATA_DIR", data_dir.path())
        .env("CAPTCHA_TEST_CODE", "pass")
        .env("ADMIN_EMAILS", "secret.admin@example.com")
        .env("HTTP_WORKERS", "1")
        .env("ARGON2_MEMORY_KIB", "64")
        .env("ARGON2_ITERATIONS", "1")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let logs = std::sync::Arc::new(tokio::sync::Mutex::new(String::new()));
    for stream in [
        Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
        Box::new(stderr),
    ] {
        let logs = logs.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut logs = logs.lock().await;
                logs.push_str(&line);
                logs.push('\n');
            }
        });
    }
    // The binary starts a PostgreSQL cluster of its own first: a generous deadline, and the
    // wait ends at once if the process dies.
    let started = Instant::now();
    let port = loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let text = logs.lock().await.clone();
        if let Some(at) = text.find("port=") {
            let digits: String = text[at + 5..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if !digits.is_empty() {
                break digits;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the service exited ({status}) before it served:\n{text}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the service did not say its port within 120 s:\n{text}"
        );
    };
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let captcha = || async {
        let answer = send(client.get(format!("{base}/myapi/auth/captcha"))).await;
        answer.assert_ok()["captcha_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let email = "secret.admin@example.com";
    let password = "Sup3r-Secret-Passw0rd";
    let body = json!({"email": email, "captcha_id": captcha().await, "captcha": "pass"});
    send(
        client
            .post(format!("{base}/myapi/auth/email-code"))
            .json(&body),
    )
    .await
    .assert_ok();
    let mailbox = std::fs::read_dir(data_dir.path().join("mail")).unwrap();
    let mail = std::fs::read_to_string(mailbox.flatten().next().unwrap().path()).unwrap();
    let at = mail.find("verification code is ").unwrap();
    let code = &mail[at + 21..at + 27];
    let registered = send(
        client
            .post(format!("{base}/myapi/auth/register"))
            .json(&json!({"email": email, "password": password, "email_code": code})),
    )
    .await;
    let token = registered.assert_ok()["token"].as_str().unwrap().to_owned();
    let wrong = json!({"email": email, "password": "not the password"});
    send(client.post(format!("{base}/myapi/auth/login")).json(&wrong))
        .await
        .assert_error(401, Some(40111));
    let key = send(
        client
            .post(format!("{base}/myapi/keys"))
            .bearer_auth(&token)
            .json(&json!({"name": "k"})),
    )
    .await;
    let key = key.assert_ok()["key"].as_str().unwrap().to_owned();
    let provider = json!({"slug": "echo", "base_url": upstream.base_url, "auth_header": "X-Secret",
        "auth_value": "provider-secret-value", "cost": 0, "timeout_ms": 1000});
    send(
        client
            .post(format!("{base}/myapi/admin/providers"))
            .bearer_auth(&token)
            .json(&provider),
    )
    .await
    .assert_ok();
    // A call that reaches the upstream with the provider's secret, and one with a bad key:
    // the secret and the key must be in no log line either way.
    let served = send(
        client
            .get(format!("{base}/api/v1/echo/x"))
            .header("X-API-Key", &key),
    )
    .await;
    assert_eq!(served.status, 200, "{}", served.text);
    assert_eq!(upstream.hits(), 1, "the call reached the upstream");
    send(
        client
            .get(format!("{base}/api/v1/echo/x"))
            .header("X-API-Key", format!("{key}x")),
    )
    .await
    .assert_error(401, Some(40103));
    let forgot = json!({"email": email, "captcha_id": captcha().await, "captcha": "pass"});
    send(
        client
            .post(format!("{base}/myapi/auth/password/forgot"))
            .json(&forgot),
    )
    .await
    .assert_ok();
    let reset_mail = std::fs::read_dir(data_dir.path().join("mail"))
        .unwrap()
        .flatten()
        .map(|entry| std::fs::read_to_string(entry.path()).unwrap())
        .find(|mail| mail.contains("reset-password"))
        .unwrap();
    let reset_token = support::reset_token(&support::decode_quoted_printable(&reset_mail));
    send(
        client
            .post(format!("{base}/myapi/auth/password/reset"))
            .json(&json!({"token": reset_token, "password": "Another-Secret-9"})),
    )
    .await
    .assert_ok();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    child.kill().await.ok();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let logs = logs.lock().await.clone();
    assert!(logs.lines().count() > 10, "the service logged: {logs}");
    assert!(logs.contains("s***@example.com"), "addresses appear masked");
    for secret in [
        email,
        password,
        "Another-Secret-9",
        token.as_str(),
        key.as_str(),
        reset_token.as_str(),
        "provider-secret-value",
    ] {
        assert!(
            !logs.contains(secret),
            "a log line holds {secret:?}:\n{logs}"
        );
    }
    let stored: Value = json!(
        sqlx::query_scalar::<_, String>("SELECT password_hash FROM users")
            .fetch_one(&harness.pool)
            .await
            .unwrap()
    );
    assert!(stored.as_str().unwrap().starts_with("$argon2id$"));
}

#[tokio::test]
async fn an_upstream_that_hangs_up_mid_body_truncates_the_answer_and_nothing_else() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // An upstream that promises 1,000 bytes, sends ten and closes the connection.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buffer = [0u8; 4096];
            let _ = stream.read(&mut buffer).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n0123456789")
                .await;
        }
    });
    let scene = Scene::start().await;
    let app = &scene.app;
    let provider = json!({"slug": "flaky", "base_url": format!("http://127.0.0.1:{upstream_port}"),
        "cost": 1, "timeout_ms": 2000});
    scene
        .admin()
        .post("/myapi/admin/providers", provider)
        .await
        .assert_ok();
    scene.fund(10).await;
    let key = scene.new_key().await;

    // Depending on how much actix had flushed, the client sees the head and a broken body, or
    // a broken message: never a complete answer, never a hang.
    let outcome = tokio::time::timeout(Duration::from_secs(5), async {
        let request = app
            .request(Method::GET, "/api/v1/flaky/x")
            .header("X-API-Key", &key);
        request.send().await?.bytes().await
    })
    .await
    .expect("the client is not left hanging");
    assert!(
        outcome.is_err(),
        "the client never sees a truncated body as complete"
    );
    // The upstream answered, so the call is charged once; the service keeps serving.
    assert_eq!(scene.settled_balance(9).await, 9);
    app.get("/healthz").await.assert_ok();
}

/// A Redis of the test's own, on a free port, that the test can stop.
struct OwnRedis {
    port: u16,
    child: tokio::process::Child,
}

impl OwnRedis {
    async fn start() -> Option<OwnRedis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = tokio::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .ok()?;
        for _ in 0..50 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Some(OwnRedis { port, child });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

#[tokio::test]
async fn with_redis_gone_limits_fall_back_per_instance_and_credits_stay_exact() {
    let Some(mut redis) = OwnRedis::start().await else {
        support::skip(
            "with_redis_gone_limits_fall_back_per_instance_and_credits_stay_exact",
            "no redis-server binary to run a Redis of the test's own",
        );
        return;
    };
    let scene = Scene::builder()
        .config(
            TestConfig::default()
                .var("REDIS_URL", format!("redis://127.0.0.1:{}", redis.port))
                .var("AUTH_LOGIN_PER_IP_PER_MINUTE", "5"),
        )
        .start()
        .await;
    let app = &scene.app;
    scene.fund(20).await;
    scene.set_limits(1000, 100_000, Some(30)).await;
    let key = scene.new_key().await;
    let call = || {
        send(
            app.request(Method::GET, "/api/v1/echo/x")
                .header("X-API-Key", &key),
        )
    };
    for _ in 0..5 {
        assert_eq!(call().await.status, 200);
    }

    redis.child.kill().await.unwrap();
    // Calls go on under the in-process limits: never a 5xx, and the credits run out exactly.
    let mut served = 5;
    for _ in 0..25 {
        let answer = call().await;
        match answer.status {
            200 => served += 1,
            _ => answer.assert_error(402, Some(40201)),
        }
    }
    assert_eq!(served, 20, "exactly the credits' worth of calls");
    assert_eq!(scene.upstream.hits(), 20);
    // The login throttle falls back too: still enforced, now per instance.
    let mut throttled = false;
    for _ in 0..8 {
        let answer = app
            .post_json(
                "/myapi/auth/login",
                &json!({"email": "x@example.com", "password": "whatever1"}),
            )
            .await;
        assert!(answer.status < 500, "{}", answer.text);
        throttled |= answer.status == 429;
    }
    assert!(throttled, "the login throttle still holds without Redis");
    assert_eq!(scene.settled_balance(0).await, 0);
}

/// A settlement whose COMMIT reached PostgreSQL but whose answer was lost (the connection died
/// in between) is charged once: the gateway asks PostgreSQL whether it committed before it
/// settles the account again, so neither credits nor usage are counted twice.
#[tokio::test]
async fn a_settlement_whose_commit_answer_is_lost_is_charged_once() {
    let proxy = std::sync::Arc::new(
        support::pg_proxy::PgProxy::start(support::server_url().await, "SET settled").await,
    );
    let config = TestConfig::default().database_through(proxy.clone());
    let scene = Scene::builder().config(config).start().await;
    let user_id = scene.user().id;
    scene.set_limits(1000, 100_000, None).await;
    scene.fund(100).await;
    let key = scene.new_key().await;
    let call = || {
        let request = scene.app.request(Method::GET, "/api/v1/echo/x");
        send(request.header("X-API-Key", &key))
    };
    let calls = |count: usize| async move {
        for _ in 0..count {
            let answer = call().await;
            assert_eq!(answer.status, 200, "{}", answer.text);
        }
    };
    let settled = |balance: i64, calls: i64| {
        let pool = scene.app.pool.clone();
        async move {
            support::eventually(
                Duration::from_secs(10),
                &format!("balance {balance} and {calls} calls settled"),
                || async {
                    let seen = support::credit_account(&pool, user_id, "balance").await;
                    let counted: i64 = sqlx::query_scalar(
                        "SELECT COALESCE(sum(calls), 0)::bigint FROM usage_hourly WHERE user_id = $1",
                    )
                    .bind(user_id)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                    (seen == balance && counted == calls).then_some(())
                },
            )
            .await
        }
    };

    calls(5).await;
    settled(95, 5).await;
    // The next settlement of the account commits, and the gateway never hears so.
    proxy.lose_next_commit();
    calls(5).await;
    support::eventually(Duration::from_secs(10), "a COMMIT lost", || async {
        (proxy.commits_lost() == 1).then_some(())
    })
    .await;
    calls(3).await;
    settled(87, 13).await;
    // And later settlements go on from there.
    calls(1).await;
    settled(86, 14).await;

    // The same when the lost settlement is the one that gives an idle lease back: a call in
    // between, which would reserve into that lease, is told to retry (503) until PostgreSQL
    // has said what became of it, and never charged twice.
    proxy.lose_next_commit();
    support::eventually(Duration::from_secs(10), "a second COMMIT lost", || async {
        (proxy.commits_lost() == 2).then_some(())
    })
    .await;
    support::eventually(Duration::from_secs(10), "a call served again", || async {
        let answer = call().await;
        if answer.status == 503 {
            answer.assert_error(503, None);
            return None;
        }
        assert_eq!(answer.status, 200, "{}", answer.text);
        Some(())
    })
    .await;
    settled(85, 15).await;

    // Idle, the account's leases all go back: none was brought back behind the wallet's back
    // to hold credits for nobody.
    let pool = &scene.app.pool;
    support::eventually(
        Duration::from_secs(20),
        "every lease given back",
        || async {
            let leases: i64 =
                sqlx::query_scalar("SELECT count(*) FROM credit_leases WHERE user_id = $1")
                    .bind(user_id)
                    .fetch_one(pool)
                    .await
                    .unwrap();
            let reserved = support::credit_account(pool, user_id, "reserved").await;
            (leases == 0 && reserved == 0).then_some(())
        },
    )
    .await;
    assert_eq!(scene.balance().await, 85);
    support::assert_ledger_consistent(pool).await;
}
