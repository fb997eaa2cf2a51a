//! The foundation over HTTP: the envelope, request ids, languages, the code catalogue, the
//! operations endpoints, cross-origin access for browsers and the private PostgreSQL cluster.

mod architecture;
mod support;

use reqwest::Method;
use support::{TestConfig, send, spawn_app};

#[tokio::test]
async fn health_answers_the_success_envelope_with_a_request_id() {
    let app = spawn_app().await;
    let response = app.get("/healthz").await;
    let data = response.assert_ok();
    assert_eq!(response.json["msg"], "success");
    assert_eq!(data["status"], "up");
    let request_id = response.header("x-request-id").unwrap();
    assert!(
        uuid::Uuid::parse_str(request_id).is_ok(),
        "a generated id is a UUID"
    );
}

#[tokio::test]
async fn a_client_request_id_is_echoed_and_a_forged_one_replaced() {
    let app = spawn_app().await;
    let echoed = send(
        app.request(Method::GET, "/nowhere")
            .header("X-Request-Id", "trace-42"),
    )
    .await;
    echoed.assert_error(404, None);
    assert_eq!(echoed.header("x-request-id"), Some("trace-42"));
    assert_eq!(echoed.json["request_id"], "trace-42");

    let forged = send(
        app.request(Method::GET, "/healthz")
            .header("X-Request-Id", "a b\"c"),
    )
    .await;
    assert_ne!(forged.header("x-request-id"), Some("a b\"c"));
}

/// A request head over 32 KiB is refused with 431, on the gateway's path and the application's
/// alike, and the service goes on serving.
#[tokio::test]
async fn an_oversized_request_head_is_refused_and_the_service_keeps_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    for path in ["/myapi/plans", "/api/v1/echo/x"] {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
            .await
            .unwrap();
        let padding = "a".repeat(40 * 1024);
        let head =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nX-Padding: {padding}\r\n\r\n");
        // The server may answer and close before it has read everything.
        let _ = stream.write_all(head.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 431"), "{path}: {answer}");
    }
    app.get("/healthz").await.assert_ok();
}

/// A client that sends part of a request head and then nothing is disconnected once the head
/// timeout (5 s) has passed, so idle or slow clients cannot hold connections open: on the
/// application's path and on the metered calls' own path alike.
#[tokio::test]
async fn a_request_head_that_never_ends_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let cut_off = |path: &'static str| async move {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
            .await
            .unwrap();
        let head = format!("GET {path} HTTP/1.1\r\nHost: loc");
        stream.write_all(head.as_bytes()).await.unwrap();
        let started = std::time::Instant::now();
        let mut answer = Vec::new();
        let closed = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            stream.read_to_end(&mut answer),
        )
        .await;
        assert!(
            closed.is_ok(),
            "{path}: the connection was still open after 30 s"
        );
        let waited = started.elapsed();
        assert!(
            waited >= std::time::Duration::from_secs(4),
            "{path}: cut off after {waited:?}, before the head timeout"
        );
        assert!(!String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    };
    futures_util::future::join(cut_off("/healthz"), cut_off("/api/v1/echo/x")).await;
    app.get("/healthz").await.assert_ok();
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_the_404_envelope() {
    let app = spawn_app().await;
    app.get("/no/such/route").await.assert_error(404, None);
    send(app.request(Method::POST, "/healthz"))
        .await
        .assert_error(404, None);
    send(app.request(Method::DELETE, "/myapi/error-codes"))
        .await
        .assert_error(404, None);
}

#[tokio::test]
async fn msg_follows_x_lang_and_the_lang_parameter() {
    let app = spawn_app().await;
    let english = app.get("/nowhere").await;
    assert_eq!(english.json["msg"], "Requested resource does not exist.");
    let chinese = send(app.request(Method::GET, "/nowhere").header("X-Lang", "zh")).await;
    chinese.assert_error(404, None);
    assert_eq!(chinese.json["msg"], "请求的资源不存在。");
    let by_query = app.get("/nowhere?lang=zh").await;
    assert_eq!(by_query.json["msg"], "请求的资源不存在。");
    let success = send(app.request(Method::GET, "/healthz").header("X-Lang", "zh")).await;
    assert_eq!(success.json["msg"], "成功");
}

/// A row of the seed's code tables, with the module its table belongs to.
struct SeedCode {
    key: u64,
    module: &'static str,
    name: String,
    description: String,
    recommendation: String,
}

/// Reads `../shared/seeds/000_cde45f42f471d74c.txt`: its module table (module, ranges), then its
/// code tables. A code table belongs to the one module whose ranges hold all of its codes; the
/// table of three-digit codes holds the global ones.
fn seed_codes() -> Vec<SeedCode> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/seeds/000_cde45f42f471d74c.txt");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("the seed's error table at {}: {error}", path.display()));
    let cells = |line: &str| -> Vec<String> {
        line.trim()
            .trim_matches('|')
            .split('|')
            .map(|cell| cell.trim().to_owned())
            .collect()
    };
    let mut ranges: Vec<(&'static str, Vec<(u64, u64)>)> = Vec::new();
    let mut tables: Vec<Vec<Vec<String>>> = Vec::new();
    for line in text
        .lines()
        .filter(|line| line.trim_start().starts_with('|'))
    {
        let row = cells(line);
        if row[0].starts_with("---") || row[0] == "Code Range" {
            continue;
        }
        if row[0] == "Code" {
            tables.push(Vec::new());
        } else if tables.is_empty() {
            let module = match row[1].as_str() {
                "Auth" => "auth",
                "Gateway" => "gateway",
                "Payment" => "payment",
                other => panic!("a module the seed names and the test does not know: {other}"),
            };
            let spans = row[0]
                .split(',')
                .map(|span| {
                    let (low, high) = span.trim().split_once('-').unwrap_or((span, span));
                    (low.trim().parse().unwrap(), high.trim().parse().unwrap())
                })
                .collect();
            ranges.push((module, spans));
        } else {
            tables.last_mut().unwrap().push(row);
        }
    }
    assert_eq!(ranges.len(), 3, "the seed's module table");
    let mut codes = Vec::new();
    for table in tables {
        let keys: Vec<u64> = table.iter().map(|row| row[0].parse().unwrap()).collect();
        let module = if keys.iter().all(|key| *key < 1000) {
            "global"
        } else {
            let owners: Vec<&str> = ranges
                .iter()
                .filter(|(_, spans)| {
                    keys.iter()
                        .all(|key| spans.iter().any(|(low, high)| (low..=high).contains(&key)))
                })
                .map(|(module, _)| *module)
                .collect();
            assert_eq!(owners.len(), 1, "one module holds the table of {keys:?}");
            owners[0]
        };
        for (key, row) in keys.into_iter().zip(table) {
            codes.push(SeedCode {
                key,
                module,
                name: row[1].clone(),
                description: row[2].clone(),
                recommendation: row[3].clone(),
            });
        }
    }
    codes
}

#[tokio::test]
async fn the_catalogue_serves_every_seed_code_once_with_its_name_and_meaning() {
    let seed = seed_codes();
    assert!(seed.len() > 40, "the seed was read: {} codes", seed.len());
    let app = spawn_app().await;
    let response = app.get("/myapi/error-codes").await;
    let data = response.assert_ok();
    let items = data["items"].as_array().unwrap();
    for code in &seed {
        let served: Vec<&serde_json::Value> = items
            .iter()
            .filter(|item| {
                let key = item["sub_code"].as_u64().or(item["code"].as_u64());
                key == Some(code.key)
            })
            .collect();
        assert_eq!(served.len(), 1, "{} is served exactly once", code.key);
        let item = served[0];
        assert_eq!(item["name"], code.name.as_str(), "name of {}", code.key);
        assert_eq!(
            item["description"],
            code.description.as_str(),
            "meaning of {}",
            code.key
        );
        assert_eq!(
            item["recommendation"],
            code.recommendation.as_str(),
            "{}",
            code.key
        );
        assert_eq!(item["module"], code.module, "module of {}", code.key);
        let class = if code.key < 1000 {
            code.key
        } else {
            code.key / 100
        };
        assert_eq!(
            item["code"].as_u64(),
            Some(class),
            "HTTP class of {}",
            code.key
        );
        assert!(item["message_zh"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Whatever the seed lacks is an extension, and says so.
    for item in items {
        let key = item["sub_code"].as_u64().or(item["code"].as_u64()).unwrap();
        if !seed.iter().any(|code| code.key == key) {
            assert_eq!(item["extension"], true, "{key} is not in the seed");
        }
    }
    assert_eq!(data["total"].as_u64(), Some(items.len() as u64));
    assert_eq!(data["modules"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn the_error_page_renders_every_code_from_the_template() {
    let app = spawn_app().await;
    let page = app.get("/docs/errors").await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    for code in ["40001", "40111", "42903", "50301", "40028", "50023", "503"] {
        assert!(
            page.text.contains(&format!(">{code}</td>")),
            "{code} missing from the page"
        );
    }
    for heading in [
        "Global codes",
        "Auth (",
        "Gateway (",
        "Payment (",
        "Back to API Docs",
    ] {
        assert!(
            page.text.contains(heading),
            "{heading} missing from the page"
        );
    }
    assert!(
        !page.text.contains("http://") && !page.text.contains("https://"),
        "no CDN"
    );
}

#[tokio::test]
async fn openapi_and_the_interactive_docs_are_served_without_a_cdn() {
    let app = spawn_app().await;
    let document = app.get("/openapi.json").await;
    assert_eq!(document.status, 200);
    assert!(document.json["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/healthz",
        "/readyz",
        "/myapi/error-codes",
        "/myapi/auth/login",
        "/myapi/auth/register",
        "/myapi/user/profile",
        "/myapi/auth/password/reset",
    ] {
        assert!(
            document.json["paths"][path].is_object(),
            "{path} documented"
        );
    }
    assert!(document.json["components"]["schemas"]["ErrorBody"].is_object());
    assert!(document.json["components"]["securitySchemes"]["session"].is_object());
    let login = &document.json["paths"]["/myapi/auth/login"]["post"];
    assert!(
        login["requestBody"].is_object(),
        "request schemas are documented"
    );
    assert!(
        login["responses"]["401"]["description"]
            .as_str()
            .unwrap()
            .contains("40111")
    );

    let redirect = app.get("/docs").await;
    assert_eq!(redirect.status, 308);
    let page = app.get("/docs/").await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("swagger-ui"));
    assert!(
        !page.text.contains("https://"),
        "the docs page loads nothing from the network"
    );
    let config = app.get("/docs/swagger-initializer.js").await;
    assert_eq!(config.status, 200);
    assert!(config.text.contains("/openapi.json"));
    let bundle = app.get("/docs/swagger-ui-bundle.js").await;
    assert_eq!(bundle.status, 200);
    assert!(
        bundle.text.len() > 100_000,
        "the bundle is vendored in the binary"
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_report_the_pool() {
    let app = spawn_app().await;
    app.get("/healthz").await.assert_ok();
    app.get("/no/such/route").await;
    // The gateway's route, twice (its series are then found in the worker's own map).
    for _ in 0..2 {
        app.get("/api/v1/echo/x")
            .await
            .assert_error(401, Some(40102));
    }
    let metrics = app.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.text.contains(
        r#"meterapi_http_requests_total{endpoint="/healthz",method="GET",status="200"} 1"#
    ));
    assert!(metrics.text.contains(r#"endpoint="UNMATCHED""#));
    assert!(metrics.text.contains(
        r#"meterapi_http_requests_total{endpoint="/api/v1/{provider}/{path}",method="GET",status="401"} 2"#
    ));
    assert!(
        metrics
            .text
            .contains("meterapi_http_requests_duration_seconds_bucket")
    );
    // Timed as well as counted, in the worker's own copies until the scrape.
    assert!(metrics.text.contains(
        r#"meterapi_http_requests_duration_seconds_count{endpoint="/api/v1/{provider}/{path}",method="GET",status="401"} 2"#
    ));
    assert!(metrics.text.contains("meterapi_db_pool_max_connections 20"));
    assert!(metrics.text.contains("meterapi_db_pool_connections"));
}

#[tokio::test]
async fn made_up_methods_do_not_grow_the_metrics() {
    let app = spawn_app().await;
    let before = app.get("/metrics").await.text.len();
    for i in 0..50 {
        let method = Method::from_bytes(format!("AAAA{i:04}").as_bytes()).unwrap();
        send(app.request(method, "/")).await.assert_error(404, None);
    }
    let metrics = app.get("/metrics").await;
    assert!(
        !metrics.text.contains("AAAA"),
        "a raw method became a label"
    );
    assert!(metrics.text.contains(r#"method="OTHER""#));
    // One new series (and its histogram), not fifty.
    assert!(
        metrics.text.len() < before + 4_000,
        "{} bytes after, {before} before",
        metrics.text.len()
    );
}

#[tokio::test]
async fn a_metrics_token_keeps_metrics_to_its_holder() {
    let app =
        support::spawn_app_with(TestConfig::default().var("METRICS_TOKEN", "scrape-me")).await;
    app.get("/metrics").await.assert_error(401, None);
    let wrong = send(
        app.request(Method::GET, "/metrics")
            .bearer_auth("scrape-you"),
    )
    .await;
    wrong.assert_error(401, None);
    let right = send(
        app.request(Method::GET, "/metrics")
            .bearer_auth("scrape-me"),
    )
    .await;
    assert_eq!(right.status, 200);
    assert!(right.text.contains("meterapi_http_requests_total"));
}

#[tokio::test]
async fn readiness_turns_503_with_retry_after_when_the_database_is_gone() {
    let app = spawn_app().await;
    app.get("/readyz").await.assert_ok();
    app.drop_database().await;
    let response = app.get("/readyz").await;
    response.assert_error(503, None);
    assert!(
        response
            .header("retry-after")
            .is_some_and(|s| s.parse::<u64>().unwrap() >= 1)
    );
    // The service still serves what needs no database.
    app.get("/healthz").await.assert_ok();
}

#[tokio::test]
async fn with_nothing_configured_the_service_runs_its_own_cluster() {
    // What `cargo run` does on a fresh machine: DATABASE_URL unset, a private cluster created
    // under DATA_DIR, served, and stopped with the service.
    let data_dir = tempfile::tempdir().unwrap();
    let data_path = data_dir.path().display().to_string();
    let vars = std::collections::HashMap::from([
        ("APP_ENV", "test"),
        ("LISTEN_ADDR", "127.0.0.1:0"),
        ("HTTP_WORKERS", "1"),
        ("DATA_DIR", data_path.as_str()),
    ]);
    let settings =
        meterapi::Settings::from_lookup(|name| vars.get(name).map(|v| v.to_string())).unwrap();
    let application = meterapi::Application::build(settings)
        .await
        .expect("builds");
    let port = application.port();
    let handle = application.handle();
    let running = tokio::spawn(application.run_until_stopped());

    let address = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let ready = send(client.get(format!("{address}/readyz"))).await;
    ready.assert_ok();
    let codes = send(client.get(format!("{address}/myapi/error-codes"))).await;
    assert_eq!(codes.assert_ok()["total"], meterapi::api::CATALOGUE.len());
    let cluster = data_dir.path().join("postgres");
    assert!(cluster.join("PG_VERSION").exists());
    assert!(cluster.join("postmaster.pid").exists(), "the cluster runs");
    assert!(
        cluster.join(".s.PGSQL.5432").exists(),
        "it listens on a socket inside DATA_DIR"
    );

    handle.stop(true).await;
    running.await.unwrap().unwrap();
    assert!(
        !cluster.join("postmaster.pid").exists(),
        "the cluster stops with the service"
    );
}

/// The product's middleware and extractors on a real server with handlers made for the
/// purpose: one that panics, one that reads a JSON body.
mod envelope_edges {
    use actix_web::middleware::from_fn;
    use actix_web::{App, HttpResponse, HttpServer, web};
    use meterapi::api::{ApiJson, extractor_configs, ok, request_context_middleware};
    use serde::Deserialize;

    use super::send;

    #[derive(Deserialize)]
    struct Signup {
        email: String,
        age: Option<u32>,
    }

    async fn echo(ApiJson(body): ApiJson<Signup>) -> HttpResponse {
        ok(serde_json::json!({ "email": body.email, "age": body.age }))
    }

    async fn explode() -> HttpResponse {
        panic!("a bug in a handler")
    }

    async fn serve() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = HttpServer::new(|| {
            App::new()
                .wrap(from_fn(request_context_middleware))
                .configure(extractor_configs)
                .route("/echo", web::post().to(echo))
                .route("/explode", web::get().to(explode))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        format!("http://127.0.0.1:{port}")
    }

    #[tokio::test]
    async fn a_panic_answers_500_and_the_server_keeps_serving() {
        let base = serve().await;
        let client = reqwest::Client::new();
        for _ in 0..3 {
            let response = send(
                client
                    .get(format!("{base}/explode"))
                    .header("X-Request-Id", "boom-1"),
            )
            .await;
            response.assert_error(500, None);
            assert_eq!(response.json["msg"], "Server-side processing failed.");
            assert!(
                !response.text.contains("a bug in a handler"),
                "internals stay in the log"
            );
            assert_eq!(response.json["request_id"], "boom-1");
        }
        let body = serde_json::json!({"email": "a@b.c"});
        send(client.post(format!("{base}/echo")).json(&body))
            .await
            .assert_ok();
    }

    #[tokio::test]
    async fn bad_json_answers_400_naming_the_field() {
        let base = serve().await;
        let client = reqwest::Client::new();
        let post = |body: &'static str| {
            send(
                client
                    .post(format!("{base}/echo"))
                    .header("content-type", "application/json")
                    .body(body),
            )
        };
        let missing = post(r#"{"age": 3}"#).await;
        missing.assert_error(400, None);
        assert!(
            missing.json["msg"]
                .as_str()
                .unwrap()
                .contains("missing field `email`")
        );

        let wrong_type = post(r#"{"email": 12}"#).await;
        wrong_type.assert_error(400, None);
        assert!(
            wrong_type.json["msg"]
                .as_str()
                .unwrap()
                .contains("field `email`")
        );

        let negative = post(r#"{"email": "a@b.c", "age": -1}"#).await;
        assert!(
            negative.json["msg"]
                .as_str()
                .unwrap()
                .contains("field `age`")
        );

        let malformed = post(r#"{"email": "#).await;
        malformed.assert_error(400, None);
        assert!(
            malformed.json["msg"]
                .as_str()
                .unwrap()
                .contains("Malformed JSON")
        );

        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        let nested = send(client.post(format!("{base}/echo")).body(deep)).await;
        nested.assert_error(400, None);

        let fine = post(r#"{"email": "a@b.c", "age": 7}"#).await;
        assert_eq!(fine.assert_ok()["age"], 7);
    }

    #[tokio::test]
    async fn a_body_over_one_mebibyte_answers_400() {
        let base = serve().await;
        let client = reqwest::Client::new();
        let padding = "x".repeat(1024 * 1024);
        let body = format!(r#"{{"email": "{padding}"}}"#);
        let response = send(client.post(format!("{base}/echo")).body(body)).await;
        response.assert_error(400, None);
        assert!(
            response.json["msg"].as_str().unwrap().contains("exceeds"),
            "{}",
            response.text
        );
    }
}

/// Cross-origin access for browsers: `CORS_ALLOWED_ORIGINS` and `CORS_GATEWAY`.
mod cors {
    use reqwest::Method;

    use super::support::{TestApp, TestConfig, TestResponse, send, spawn_app, spawn_app_with};

    const APP: &str = "https://app.example.com";
    const OTHER: &str = "https://evil.example.com";
    const CONTRACT_HEADERS: &str = "authorization,content-type,x-lang,idempotency-key,x-request-id";

    /// Every header of the CORS protocol an answer could carry.
    const CORS_HEADERS: [&str; 6] = [
        "access-control-allow-origin",
        "access-control-allow-methods",
        "access-control-allow-headers",
        "access-control-allow-credentials",
        "access-control-expose-headers",
        "access-control-max-age",
    ];

    async fn allowing(origins: &str, gateway: bool) -> TestApp {
        spawn_app_with(
            TestConfig::default()
                .var("CORS_ALLOWED_ORIGINS", origins)
                .var("CORS_GATEWAY", gateway.to_string()),
        )
        .await
    }

    async fn preflight(app: &TestApp, path: &str, origin: &str, method: &str) -> TestResponse {
        send(
            app.request(Method::OPTIONS, path)
                .header("Origin", origin)
                .header("Access-Control-Request-Method", method)
                .header("Access-Control-Request-Headers", CONTRACT_HEADERS),
        )
        .await
    }

    async fn from(app: &TestApp, method: Method, path: &str, origin: &str) -> TestResponse {
        send(
            app.request(method, path)
                .header("Origin", origin)
                .header("X-Request-Id", "cors-1"),
        )
        .await
    }

    /// The comma-separated items of a header, lower-cased.
    fn items(response: &TestResponse, name: &str) -> Vec<String> {
        response
            .header(name)
            .unwrap_or_default()
            .split(',')
            .map(|item| item.trim().to_ascii_lowercase())
            .filter(|item| !item.is_empty())
            .collect()
    }

    fn assert_no_cors(response: &TestResponse) {
        for name in CORS_HEADERS {
            assert!(
                response.header(name).is_none(),
                "{name} must not be sent; status {}",
                response.status
            );
        }
    }

    fn assert_preflight_accepted(response: &TestResponse, origin: &str) {
        assert_eq!(response.status, 204, "{}", response.text);
        assert_eq!(response.header("access-control-allow-origin"), Some(origin));
        let methods = items(response, "access-control-allow-methods");
        for method in ["get", "post", "put", "patch", "delete"] {
            assert!(
                methods.contains(&method.to_owned()),
                "{method} in {methods:?}"
            );
        }
        let headers = items(response, "access-control-allow-headers");
        for header in CONTRACT_HEADERS.split(',') {
            assert!(
                headers.contains(&header.to_owned()),
                "{header} in {headers:?}"
            );
        }
        let max_age: u64 = response
            .header("access-control-max-age")
            .unwrap()
            .parse()
            .unwrap();
        assert!(max_age >= 60);
        assert!(items(response, "vary").contains(&"origin".to_owned()));
        let request_id = response.header("x-request-id").unwrap_or_default();
        assert!(uuid::Uuid::parse_str(request_id).is_ok(), "{request_id:?}");
        assert!(
            response
                .header("access-control-allow-credentials")
                .is_none()
        );
    }

    fn assert_cors_answer(response: &TestResponse, origin: &str) {
        assert_eq!(response.header("access-control-allow-origin"), Some(origin));
        let exposed = items(response, "access-control-expose-headers");
        for header in [
            "x-request-id",
            "retry-after",
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-credits-remaining",
        ] {
            assert!(
                exposed.contains(&header.to_owned()),
                "{header} in {exposed:?}"
            );
        }
        assert!(items(response, "vary").contains(&"origin".to_owned()));
        assert!(
            response
                .header("access-control-allow-credentials")
                .is_none()
        );
        assert!(response.header("access-control-max-age").is_none());
    }

    /// The same request without `Origin` gets the same status and body code: CORS changed
    /// nothing but (at most) its headers.
    async fn assert_as_without_origin(
        app: &TestApp,
        method: Method,
        path: &str,
        response: &TestResponse,
    ) {
        let plain = send(app.request(method, path)).await;
        assert_eq!(response.status, plain.status, "{path}: {}", response.text);
        assert_eq!(response.json["code"], plain.json["code"], "{path}");
    }

    #[tokio::test]
    async fn an_allowed_origin_gets_preflights_and_cors_headers_on_answers_and_errors() {
        let app = allowing(&format!("{APP},http://localhost:3000"), false).await;
        for (path, method) in [
            ("/myapi/auth/login", "POST"),
            ("/myapi/user/profile", "GET"),
            ("/myapi/keys/00000000-0000-0000-0000-000000000000", "DELETE"),
            ("/myapi/no/such/route", "PUT"),
        ] {
            assert_preflight_accepted(&preflight(&app, path, APP, method).await, APP);
        }
        let local = preflight(&app, "/myapi/auth/login", "http://localhost:3000", "POST").await;
        assert_preflight_accepted(&local, "http://localhost:3000");

        let codes = from(&app, Method::GET, "/myapi/error-codes", APP).await;
        codes.assert_ok();
        assert_cors_answer(&codes, APP);
        assert_eq!(codes.header("x-request-id"), Some("cors-1"));

        let profile = from(&app, Method::GET, "/myapi/user/profile", APP).await;
        profile.assert_error(401, Some(40101));
        assert_cors_answer(&profile, APP);

        let unknown = from(&app, Method::GET, "/myapi/no/such/route", APP).await;
        unknown.assert_error(404, None);
        assert_cors_answer(&unknown, APP);

        // The framework's own refusal of a method, rendered by the envelope middleware.
        let wrong_method = from(&app, Method::DELETE, "/myapi/error-codes", APP).await;
        wrong_method.assert_error(404, None);
        assert_cors_answer(&wrong_method, APP);

        let bad_json = send(
            app.request(Method::POST, "/myapi/auth/login")
                .header("Origin", APP)
                .header("content-type", "application/json")
                .body("{"),
        )
        .await;
        bad_json.assert_error(400, None);
        assert_cors_answer(&bad_json, APP);
    }

    #[tokio::test]
    async fn server_errors_carry_the_cors_headers() {
        let app = allowing(APP, false).await;
        app.drop_database().await;
        let outage = send(
            app.request(Method::GET, "/myapi/user/profile")
                .header("Origin", APP)
                .bearer_auth("ses_whatever"),
        )
        .await;
        assert!(outage.status >= 500, "{}", outage.text);
        assert_eq!(outage.json["code"], outage.status);
        assert_cors_answer(&outage, APP);
    }

    /// A panic's 500 is rendered by the request-context middleware itself (as an error, not a
    /// response): with CORS wrapped outside it, as `startup.rs` does, it carries the headers.
    #[tokio::test]
    async fn a_panic_answered_by_the_envelope_middleware_carries_the_cors_headers() {
        use actix_web::middleware::from_fn;
        use actix_web::{App, HttpResponse, HttpServer, web};
        use meterapi::config::{AllowedOrigins, CorsSettings};

        async fn explode() -> HttpResponse {
            panic!("a bug in a handler")
        }

        let settings = CorsSettings {
            allowed_origins: AllowedOrigins::Listed(vec![APP.to_owned()]),
            gateway: false,
        };
        let cors = meterapi::api::cors(&settings);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(meterapi::api::request_context_middleware))
                .wrap(cors.clone())
                .route("/myapi/explode", web::get().to(explode))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);

        let client = reqwest::Client::new();
        let url = format!("{base}/myapi/explode");
        let crashed = send(client.get(&url).header("Origin", APP)).await;
        crashed.assert_error(500, None);
        assert_cors_answer(&crashed, APP);
        let elsewhere = send(client.get(&url).header("Origin", OTHER)).await;
        elsewhere.assert_error(500, None);
        assert_no_cors(&elsewhere);
    }

    #[tokio::test]
    async fn another_origin_is_answered_as_without_cors() {
        let app = allowing(APP, true).await;
        for origin in [
            OTHER,
            "https://app.example.com:8443",
            "http://app.example.com",
            "null",
        ] {
            let refused = preflight(&app, "/myapi/auth/login", origin, "POST").await;
            refused.assert_error(404, None);
            assert_no_cors(&refused);
            assert_as_without_origin(&app, Method::OPTIONS, "/myapi/auth/login", &refused).await;

            let codes = from(&app, Method::GET, "/myapi/error-codes", origin).await;
            codes.assert_ok();
            assert_no_cors(&codes);

            let profile = from(&app, Method::GET, "/myapi/user/profile", origin).await;
            profile.assert_error(401, Some(40101));
            assert_no_cors(&profile);

            let gateway = from(&app, Method::GET, "/api/v1/echo/x", origin).await;
            assert_no_cors(&gateway);
            assert_as_without_origin(&app, Method::GET, "/api/v1/echo/x", &gateway).await;
        }

        // Without an Origin header (not a browser's cross-origin call) nothing changes either.
        let plain = app.get("/myapi/error-codes").await;
        plain.assert_ok();
        assert_no_cors(&plain);
        let bare_preflight = send(
            app.request(Method::OPTIONS, "/myapi/auth/login")
                .header("Access-Control-Request-Method", "POST"),
        )
        .await;
        bare_preflight.assert_error(404, None);
        assert_no_cors(&bare_preflight);

        // An allowed origin asking for a method or header the API does not take gets no
        // permission, and the ordinary answer rather than a bare 400.
        for (method, headers) in [("TRACE", "content-type"), ("POST", "content-type,x-custom")] {
            let refused = send(
                app.request(Method::OPTIONS, "/myapi/auth/login")
                    .header("Origin", APP)
                    .header("Access-Control-Request-Method", method)
                    .header("Access-Control-Request-Headers", headers),
            )
            .await;
            refused.assert_error(404, None);
            assert_no_cors(&refused);
        }
    }

    #[tokio::test]
    async fn webhooks_and_metrics_never_answer_cross_origin() {
        let app = allowing(APP, true).await;
        for path in [
            "/myapi/webhooks/stripe",
            "/myapi/%77ebhooks/stripe",
            "/metrics",
        ] {
            let refused = preflight(&app, path, APP, "POST").await;
            assert_ne!(refused.status, 204, "{path}");
            assert_no_cors(&refused);
            assert_as_without_origin(&app, Method::OPTIONS, path, &refused).await;
        }
        for path in ["/myapi/webhooks/stripe", "/myapi/%77ebhooks/stripe"] {
            let webhook = from(&app, Method::POST, path, APP).await;
            assert_no_cors(&webhook);
            assert_as_without_origin(&app, Method::POST, path, &webhook).await;
        }
        let metrics = from(&app, Method::GET, "/metrics", APP).await;
        assert_eq!(metrics.status, 200);
        assert_no_cors(&metrics);
    }

    #[tokio::test]
    async fn the_gateway_answers_browsers_only_with_cors_gateway() {
        let closed = allowing(APP, false).await;
        let refused = preflight(&closed, "/api/v1/echo/x", APP, "GET").await;
        assert_ne!(refused.status, 204);
        assert_no_cors(&refused);
        assert_as_without_origin(&closed, Method::OPTIONS, "/api/v1/echo/x", &refused).await;
        let call = from(&closed, Method::GET, "/api/v1/echo/x", APP).await;
        assert_no_cors(&call);
        assert_as_without_origin(&closed, Method::GET, "/api/v1/echo/x", &call).await;
        drop(closed);

        let open = allowing(APP, true).await;
        assert_preflight_accepted(&preflight(&open, "/api/v1/echo/x", APP, "GET").await, APP);
        assert_preflight_accepted(&preflight(&open, "/api/v1/echo", APP, "POST").await, APP);
        let call = from(&open, Method::GET, "/api/v1/echo/x", APP).await;
        assert_eq!(call.status, 401, "no key: {}", call.text);
        assert_cors_answer(&call, APP);
        // The account surface stays open too; other paths stay closed.
        let profile = from(&open, Method::GET, "/myapi/user/profile", APP).await;
        assert_cors_answer(&profile, APP);
        let health = from(&open, Method::GET, "/healthz", APP).await;
        assert_no_cors(&health);
    }

    #[tokio::test]
    async fn with_no_allowed_origin_no_answer_carries_cors_headers() {
        for app in [
            spawn_app().await,
            spawn_app_with(TestConfig::default().var("CORS_GATEWAY", "true")).await,
        ] {
            let refused = preflight(&app, "/myapi/auth/login", APP, "POST").await;
            refused.assert_error(404, None);
            assert_no_cors(&refused);
            for (method, path) in [
                (Method::GET, "/myapi/error-codes"),
                (Method::GET, "/myapi/user/profile"),
                (Method::GET, "/myapi/nowhere"),
                (Method::GET, "/api/v1/echo/x"),
            ] {
                let response = from(&app, method.clone(), path, APP).await;
                assert_no_cors(&response);
                assert_as_without_origin(&app, method, path, &response).await;
            }
        }
    }

    #[tokio::test]
    async fn any_origin_outside_production_is_answered_with_a_wildcard() {
        let app = allowing("*", false).await;
        let accepted = preflight(&app, "/myapi/auth/login", OTHER, "POST").await;
        assert_eq!(accepted.status, 204);
        assert_eq!(accepted.header("access-control-allow-origin"), Some("*"));
        assert!(
            accepted
                .header("access-control-allow-credentials")
                .is_none()
        );
        let profile = from(&app, Method::GET, "/myapi/user/profile", OTHER).await;
        profile.assert_error(401, Some(40101));
        assert_cors_answer(&profile, "*");
        let webhook = from(&app, Method::POST, "/myapi/webhooks/stripe", OTHER).await;
        assert_no_cors(&webhook);
    }
}

mod command_line {
    use std::process::{Command, Output};

    use super::support;

    /// Runs the service binary with `args` and a test environment, and waits for it to end:
    /// a command that started a server instead would never end (the wait has a deadline).
    async fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
        run_in(&std::env::current_dir().unwrap(), args, envs).await
    }

    /// `run` from the working directory `dir`, where the service looks for its `.env`.
    async fn run_in(dir: &std::path::Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let data_dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_meterapi"));
        command
            .current_dir(dir)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("APP_ENV", "test")
            .env("DATA_DIR", data_dir.path())
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .envs(envs.iter().copied());
        let child = tokio::task::spawn_blocking(move || command.output());
        tokio::time::timeout(std::time::Duration::from_secs(120), child)
            .await
            .expect("the command ends by itself")
            .unwrap()
            .unwrap()
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    #[tokio::test]
    async fn help_and_version_answer_and_an_unknown_argument_is_an_error() {
        let help = run(&["--help"], &[]).await;
        assert!(help.status.success());
        let usage = text(&help.stdout);
        for word in ["Usage", "serve", "migrate", "admin"] {
            assert!(usage.contains(word), "{word} in {usage}");
        }
        let version = run(&["--version"], &[]).await;
        assert_eq!(
            text(&version.stdout).trim(),
            format!("meterapi {}", env!("CARGO_PKG_VERSION"))
        );
        let unknown = run(&["--port", "9"], &[]).await;
        assert_eq!(unknown.status.code(), Some(2));
        assert!(
            text(&unknown.stderr).contains("--port"),
            "{}",
            text(&unknown.stderr)
        );
    }

    #[tokio::test]
    async fn migrate_applies_the_migrations_and_exits() {
        let (database, url) = support::empty_database().await;
        let migrated = run(&["migrate"], &[("DATABASE_URL", &url)]).await;
        assert!(migrated.status.success(), "{}", text(&migrated.stderr));
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let free: i64 = sqlx::query_scalar("SELECT count(*) FROM plans WHERE plan_type = 'free'")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(free, 1);
        pool.close().await;
        support::drop_test_database(&database).await;
    }

    /// A `.env` in the working directory supplies what the environment does not set, and
    /// never overrides what it does.
    #[tokio::test]
    async fn a_dot_env_file_configures_what_the_environment_leaves_unset() {
        let (from_file, file_url) = support::empty_database().await;
        let (from_env, env_url) = support::empty_database().await;
        let dir = tempfile::tempdir().unwrap();
        let dot_env = format!("# comments are fine\nDATABASE_URL={file_url}\n");
        std::fs::write(dir.path().join(".env"), dot_env).unwrap();

        let migrated = run_in(dir.path(), &["migrate"], &[]).await;
        assert!(migrated.status.success(), "{}", text(&migrated.stderr));
        let overridden = run_in(dir.path(), &["migrate"], &[("DATABASE_URL", &env_url)]).await;
        assert!(overridden.status.success(), "{}", text(&overridden.stderr));

        let plans = |url: String| async move {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            let count: i64 = sqlx::query_scalar("SELECT count(*) FROM plans")
                .fetch_one(&pool)
                .await
                .unwrap();
            pool.close().await;
            count
        };
        assert!(
            plans(file_url).await >= 1,
            "the .env's database was migrated"
        );
        assert!(
            plans(env_url).await >= 1,
            "the environment's database was migrated"
        );
        support::drop_test_database(&from_file).await;
        support::drop_test_database(&from_env).await;

        // The environment wins: a .env naming a database that does not exist is not used.
        let unused = "postgres://postgres@127.0.0.1:1/never";
        std::fs::write(dir.path().join(".env"), format!("DATABASE_URL={unused}\n")).unwrap();
        let (database, url) = support::empty_database().await;
        let migrated = run_in(dir.path(), &["migrate"], &[("DATABASE_URL", &url)]).await;
        assert!(migrated.status.success(), "{}", text(&migrated.stderr));
        support::drop_test_database(&database).await;
    }

    #[tokio::test]
    async fn admin_grant_and_revoke_change_an_existing_accounts_role() {
        let app = support::spawn_app_with(support::TestConfig::default().cheap_hashing()).await;
        support::create_user(&app, "ops@example.com", "user").await;
        let url = app.database_url().await;
        let role = || async {
            sqlx::query_scalar::<_, String>(
                "SELECT role FROM users WHERE email = 'ops@example.com'",
            )
            .fetch_one(&app.pool)
            .await
            .unwrap()
        };
        let granted = run(
            &["admin", "grant", "OPS@example.com"],
            &[("DATABASE_URL", &url)],
        )
        .await;
        assert!(granted.status.success(), "{}", text(&granted.stderr));
        assert_eq!(role().await, "admin");
        let revoked = run(
            &["admin", "revoke", "ops@example.com"],
            &[("DATABASE_URL", &url)],
        )
        .await;
        assert!(revoked.status.success(), "{}", text(&revoked.stderr));
        assert_eq!(role().await, "user");
        let nobody = run(
            &["admin", "grant", "nobody@example.com"],
            &[("DATABASE_URL", &url)],
        )
        .await;
        assert!(!nobody.status.success());
        assert!(
            text(&nobody.stderr).contains("no account"),
            "{}",
            text(&nobody.stderr)
        );
    }
}

/// Mail over TLS with a login, as the contract's `smtp://user:pass@` (STARTTLS) and `smtps://`
/// URLs send it, to a server whose self-signed certificate is trusted through `SMTP_CA_FILE`.
mod mail_security {
    use serde_json::json;

    use super::support::smtp::{Security, SmtpSink};
    use super::support::{TestApp, TestConfig, TestResponse, spawn_app_with};

    /// An app whose mail goes to `smtp_url`, trusting `smtp`'s certificate when `trusted`.
    async fn app_sending_to(smtp: &SmtpSink, smtp_url: String, trusted: bool) -> TestApp {
        let ca_file = smtp.ca_file();
        let mut config = TestConfig::default()
            .var("CAPTCHA_TEST_CODE", "pass")
            .var("SMTP_URL", smtp_url);
        if trusted {
            config = config.var("SMTP_CA_FILE", ca_file.path().to_str().unwrap());
        }
        spawn_app_with(config).await
    }

    async fn request_code(app: &TestApp, email: &str) -> TestResponse {
        let captcha = app.get("/myapi/auth/captcha").await;
        let captcha_id = captcha.assert_ok()["captcha_id"].clone();
        let body = json!({"email": email, "captcha_id": captcha_id, "captcha": "pass"});
        app.post_json("/myapi/auth/email-code", &body).await
    }

    #[tokio::test]
    async fn starttls_with_a_login_delivers_over_tls_as_the_user() {
        let smtp = SmtpSink::start_secure(Security::StartTls, Some(("mailer", "s3cret"))).await;
        assert!(smtp.url().starts_with("smtp://mailer:s3cret@localhost:"));
        let app = app_sending_to(&smtp, smtp.url(), true).await;
        request_code(&app, "tls@example.com").await.assert_ok();
        let mails = smtp.mails_to("tls@example.com");
        assert_eq!(mails.len(), 1);
        assert!(mails[0].tls, "the mail came in clear");
        assert_eq!(mails[0].user.as_deref(), Some("mailer"));
        assert!(mails[0].decoded().contains("verification code is "));
    }

    #[tokio::test]
    async fn smtps_with_a_login_delivers_over_tls_as_the_user() {
        let smtp = SmtpSink::start_secure(Security::ImplicitTls, Some(("mailer", "s3cret"))).await;
        assert!(smtp.url().starts_with("smtps://mailer:s3cret@localhost:"));
        let app = app_sending_to(&smtp, smtp.url(), true).await;
        request_code(&app, "smtps@example.com").await.assert_ok();
        let mails = smtp.mails_to("smtps@example.com");
        assert_eq!(mails.len(), 1);
        assert!(mails[0].tls, "the mail came in clear");
        assert_eq!(mails[0].user.as_deref(), Some("mailer"));
    }

    #[tokio::test]
    async fn a_wrong_password_answers_50011_and_sends_nothing() {
        let smtp = SmtpSink::start_secure(Security::StartTls, Some(("mailer", "s3cret"))).await;
        let url = format!("smtp://mailer:wrong@localhost:{}", smtp.port);
        let app = app_sending_to(&smtp, url, true).await;
        request_code(&app, "denied@example.com")
            .await
            .assert_error(500, Some(50011));
        assert!(smtp.mails().is_empty());
    }

    #[tokio::test]
    async fn an_untrusted_certificate_answers_50011_and_sends_nothing() {
        let smtp = SmtpSink::start_secure(Security::StartTls, Some(("mailer", "s3cret"))).await;
        let app = app_sending_to(&smtp, smtp.url(), false).await;
        request_code(&app, "untrusted@example.com")
            .await
            .assert_error(500, Some(50011));
        assert!(smtp.mails().is_empty());
    }
}

/// Every timestamp the API answers is RFC 3339 in UTC (`Z`), whichever endpoint wrote it.
#[tokio::test]
async fn timestamps_are_rfc3339_in_utc() {
    let scene = support::scene::Scene::start().await;
    scene.fund(5).await;
    scene.new_key().await;
    let plan = serde_json::json!({"name": "Pack", "plan_type": "one_time", "amount_cents": 500,
        "credits": 50, "rps_limit": 1, "rph_limit": 1});
    let plan = scene.admin().post("/myapi/admin/plans", plan).await;
    let plan_id = plan.assert_ok()["id"].as_i64().unwrap();
    let order = serde_json::json!({"plan_id": plan_id});
    scene.user().post("/myapi/orders", order).await.assert_ok();

    let mut seen = 0;
    for (path, fields) in [
        ("/myapi/user/profile", &["created_at"][..]),
        ("/myapi/keys", &["items.created_at"][..]),
        ("/myapi/credits/ledger", &["items.created_at"][..]),
        (
            "/myapi/orders",
            &["items.created_at", "items.expires_at"][..],
        ),
    ] {
        let data = scene.user().get(path).await.assert_ok().clone();
        for field in fields {
            let values: Vec<&serde_json::Value> = match field.split_once('.') {
                Some((list, name)) => data[list]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|item| &item[name])
                    .collect(),
                None => vec![&data[*field]],
            };
            assert!(!values.is_empty(), "{path} {field}");
            for value in values {
                let text = value
                    .as_str()
                    .unwrap_or_else(|| panic!("{path} {field}: {value}"));
                let parsed = chrono::DateTime::parse_from_rfc3339(text)
                    .unwrap_or_else(|error| panic!("{path} {field}: {text}: {error}"));
                assert_eq!(
                    parsed.offset().local_minus_utc(),
                    0,
                    "{path} {field}: {text}"
                );
                assert!(text.ends_with('Z'), "{path} {field}: {text}");
                seen += 1;
            }
        }
    }
    assert!(seen >= 5);
}

/// Under root, a checkout in a directory only root can enter (root's home, a fresh `mktemp -d`)
/// still gets its private cluster: it lives where the `postgres` user can reach it, and the
/// checkout's permissions stay as they were.
#[tokio::test]
async fn the_private_cluster_runs_from_a_directory_only_root_can_enter() {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::Uid::effective().is_root() {
        support::skip(
            "the_private_cluster_runs_from_a_directory_only_root_can_enter",
            "only root runs PostgreSQL as another user",
        );
        return;
    }
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let asked = private.path().join("checkout/.data/postgres");
    let cluster = meterapi::db::EmbeddedCluster::new(&asked).unwrap();
    let location = cluster.data_dir().to_path_buf();
    assert_ne!(location, asked, "moved out of the private directory");
    let guard = support::ClusterGuard(cluster);
    guard.0.start().await.expect("the cluster starts");
    guard.0.ensure_database("reachable").await.unwrap();
    use sqlx::Connection;
    let mut connection = sqlx::PgConnection::connect_with(&guard.0.connect_options("reachable"))
        .await
        .unwrap();
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(one, 1);
    drop(connection);

    // The same checkout finds the same cluster again, and its own directory is untouched.
    let again = meterapi::db::EmbeddedCluster::new(&asked).unwrap();
    assert_eq!(again.data_dir(), location);
    let mode = std::fs::metadata(private.path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    drop(guard);
    std::fs::remove_dir_all(location.parent().unwrap()).unwrap();
}
