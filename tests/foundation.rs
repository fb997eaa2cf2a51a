//! The foundation over HTTP: the envelope, request ids, languages, the code catalogue, the
//! operations endpoints and the private PostgreSQL cluster.

mod architecture;
mod support;

use reqwest::Method;
use support::{send, spawn_app};

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

#[tokio::test]
async fn the_catalogue_lists_every_seed_code_once() {
    let app = spawn_app().await;
    let response = app.get("/myapi/error-codes").await;
    let data = response.assert_ok();
    let items = data["items"].as_array().unwrap();
    assert_eq!(items.len(), 45);
    assert_eq!(data["total"], 45);
    let globals = items
        .iter()
        .filter(|item| item["sub_code"].is_null())
        .count();
    assert_eq!(globals, 10);
    for item in items {
        assert!(item["name"].is_string() && item["recommendation"].is_string());
        assert!(item["message_zh"].as_str().is_some_and(|m| !m.is_empty()));
        if let Some(sub) = item["sub_code"].as_u64() {
            assert_eq!(item["code"].as_u64().unwrap(), sub / 100);
        }
    }
    let payment = items.iter().find(|item| item["sub_code"] == 40411).unwrap();
    assert_eq!(payment["module"], "payment");
    assert_eq!(payment["name"], "Order Not Found");
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
    let metrics = app.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.text.contains(
        r#"meterapi_http_requests_total{endpoint="/healthz",method="GET",status="200"} 1"#
    ));
    assert!(metrics.text.contains(r#"endpoint="UNMATCHED""#));
    assert!(
        metrics
            .text
            .contains("meterapi_http_requests_duration_seconds_bucket")
    );
    assert!(metrics.text.contains("meterapi_db_pool_max_connections 20"));
    assert!(metrics.text.contains("meterapi_db_pool_connections"));
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
    assert_eq!(codes.assert_ok()["total"], 45);
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
