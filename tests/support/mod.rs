//! The test harness: each test gets the whole service on port 0 against a database of its own
//! (created on `DATABASE_URL`'s server when set, else on a private cluster under the target
//! directory, and dropped afterwards), and a small client that reads the envelope.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::collections::HashMap;
use std::path::Path;

use meterapi::ServerHandle;
use meterapi::config::DatabaseSettings;
use meterapi::db::EmbeddedCluster;
use meterapi::{Application, Settings};
use reqwest::Method;
use secrecy::SecretString;
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::OnceCell;
use url::Url;

/// The server that test databases are created on: `DATABASE_URL` or the private test cluster.
pub async fn server_url() -> &'static Url {
    static SERVER: OnceCell<Url> = OnceCell::const_new();
    SERVER
        .get_or_init(|| async {
            let url = match std::env::var("DATABASE_URL") {
                Ok(url) if !url.is_empty() => url,
                _ => {
                    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("postgres");
                    let cluster = EmbeddedCluster::new(&dir).expect("PostgreSQL binaries");
                    cluster.start().await.expect("the test cluster starts");
                    cluster.url("postgres")
                }
            };
            Url::parse(&url).expect("DATABASE_URL is a URL")
        })
        .await
}

fn database_url(server: &Url, database: &str) -> String {
    let mut url = server.clone();
    url.set_path(database);
    url.to_string()
}

async fn admin_connection() -> PgConnection {
    let url = database_url(server_url().await, "postgres");
    PgConnection::connect(&url)
        .await
        .expect("the test database server answers")
}

/// Extra variables for one test's settings; `APP_ENV=test` and port 0 are always set.
#[derive(Default)]
pub struct TestConfig {
    pub vars: HashMap<String, String>,
    /// The service reaches its database through this proxy (`pg_proxy`); the test's own
    /// pool does not.
    pub database_proxy: Option<std::sync::Arc<pg_proxy::PgProxy>>,
}

impl TestConfig {
    pub fn database_through(mut self, proxy: std::sync::Arc<pg_proxy::PgProxy>) -> Self {
        self.database_proxy = Some(proxy);
        self
    }

    pub fn var(mut self, name: &str, value: impl Into<String>) -> Self {
        self.vars.insert(name.to_owned(), value.into());
        self
    }
}

pub struct TestApp {
    pub address: String,
    pub port: u16,
    /// The test's own database, for asserting on what the service wrote.
    pub pool: PgPool,
    pub database: String,
    pub data_dir: tempfile::TempDir,
    client: reqwest::Client,
    handle: ServerHandle,
    clock: std::sync::Arc<meterapi::clock::Clock>,
    /// False for a second instance on another app's database: that one drops it.
    owns_database: bool,
    vars: HashMap<String, String>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(TestConfig::default()).await
}

pub async fn spawn_app_with(config: TestConfig) -> TestApp {
    init_test_logging();
    let (database, _) = empty_database().await;
    start_instance(database, config, true).await
}

impl TestApp {
    /// A second instance of the service on this app's database, with the same settings plus
    /// `extra`: what several instances behind a load balancer look like.
    pub async fn another_instance(&self, extra: TestConfig) -> TestApp {
        let mut vars = self.vars.clone();
        vars.extend(extra.vars);
        let config = TestConfig {
            vars,
            database_proxy: extra.database_proxy,
        };
        start_instance(self.database.clone(), config, false).await
    }

    /// This instance's `DATABASE_URL`.
    pub async fn database_url(&self) -> String {
        database_url(server_url().await, &self.database)
    }
}

async fn start_instance(database: String, config: TestConfig, owns_database: bool) -> TestApp {
    let url = database_url(server_url().await, &database);
    let service_url = match &config.database_proxy {
        Some(proxy) => proxy.url(server_url().await.username(), &database),
        None => url.clone(),
    };
    let config_vars = config.vars;

    let data_dir = tempfile::tempdir().expect("a temporary DATA_DIR");
    let mut vars = HashMap::from([
        ("APP_ENV".to_owned(), "test".to_owned()),
        ("LISTEN_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
        ("HTTP_WORKERS".to_owned(), "1".to_owned()),
        ("DATA_DIR".to_owned(), data_dir.path().display().to_string()),
    ]);
    vars.extend(config_vars.clone());
    let mut settings = Settings::from_lookup(|name| vars.get(name).cloned()).expect("settings");
    settings.database = DatabaseSettings::Url(SecretString::from(service_url));

    let application = Application::build(settings)
        .await
        .expect("the application builds");
    let port = application.port();
    let handle = application.handle();
    let clock = application.clock();
    tokio::spawn(application.run_until_stopped());

    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        pool: PgPool::connect(&url)
            .await
            .expect("the test database answers"),
        database,
        data_dir,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        handle,
        clock,
        owns_database,
        vars: config_vars,
    }
}

impl TestApp {
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{}", self.address, path))
    }

    pub async fn get(&self, path: &str) -> TestResponse {
        send(self.request(Method::GET, path)).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> TestResponse {
        send(self.request(Method::POST, path).json(body)).await
    }

    /// Drops the test's database while the service still runs: the database is gone.
    pub async fn drop_database(&self) {
        self.pool.close().await;
        drop_database(&self.database).await;
    }
}

impl Drop for TestApp {
    /// Stops the service, checks the ledger invariant one last time (so every test checks it),
    /// and drops the test's database.
    fn drop(&mut self) {
        // `stop` sends its command at once; the returned future only waits for completion.
        drop(self.handle.stop(false));
        if !self.owns_database {
            return;
        }
        let database = self.database.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on; a thread with its
        // own runtime does the async work. A check that could not run is a failure too.
        let consistent = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let consistent = ledger_consistent(&database).await;
                    drop_database(&database).await;
                    consistent
                })
        })
        .join()
        .unwrap_or_else(|_| Err(String::from("the ledger check panicked")));
        if let Err(problem) = consistent
            && !std::thread::panicking()
        {
            panic!("{problem}");
        }
    }
}

const LEDGER_BROKEN: &str = r#"SELECT count(*) FROM credit_accounts a
    WHERE a.balance < 0 OR a.balance <> COALESCE(
        (SELECT sum(e.amount) FROM ledger_entries e WHERE e.user_id = a.user_id), 0)"#;

/// The ledger invariant of a test's database. A database the test dropped itself has nothing
/// to check; any other failure to check is an error, never a pass.
async fn ledger_consistent(database: &str) -> Result<(), String> {
    let mut admin = admin_connection().await;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(database)
            .fetch_one(&mut admin)
            .await
            .map_err(|error| format!("the ledger check could not list databases: {error}"))?;
    admin.close().await.ok();
    if !exists {
        return Ok(());
    }
    let url = database_url(server_url().await, database);
    let mut connection = PgConnection::connect(&url)
        .await
        .map_err(|error| format!("the ledger check could not connect: {error}"))?;
    let broken: i64 = sqlx::query_scalar(LEDGER_BROKEN)
        .fetch_one(&mut connection)
        .await
        .map_err(|error| format!("the ledger check failed: {error}"))?;
    connection.close().await.ok();
    if broken == 0 {
        Ok(())
    } else {
        Err(format!("{broken} account(s) disagree with their ledger"))
    }
}

async fn drop_database(database: &str) {
    let statement = sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"));
    let mut admin = admin_connection().await;
    sqlx::raw_sql(statement).execute(&mut admin).await.ok();
    admin.close().await.ok();
}

/// A response read whole: status, headers, the body as text and, when it is JSON, as a value.
pub struct TestResponse {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl TestResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// Asserts an error envelope with this code and sub code (None: no sub code).
    pub fn assert_error(&self, code: u16, sub_code: Option<u32>) {
        assert_eq!(self.status, code, "HTTP status; body: {}", self.text);
        assert_eq!(self.json["code"], code, "code; body: {}", self.text);
        match sub_code {
            Some(sub) => assert_eq!(self.json["sub_code"], sub, "sub_code; body: {}", self.text),
            None => assert!(
                self.json.get("sub_code").is_none(),
                "no sub_code; {}",
                self.text
            ),
        }
        assert!(self.json["data"].is_null(), "data is null on errors");
        assert!(
            self.json["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "msg present"
        );
        let request_id = self.header("x-request-id");
        assert!(
            request_id.is_some_and(|id| !id.is_empty()),
            "X-Request-Id on every error; body: {}",
            self.text
        );
        assert_eq!(
            self.json["request_id"].as_str(),
            request_id,
            "request_id equals X-Request-Id"
        );
    }

    /// Asserts a success envelope and returns `data`.
    pub fn assert_ok(&self) -> &Value {
        assert_eq!(self.status, 200, "HTTP status; body: {}", self.text);
        assert_eq!(self.json["code"], 200, "code; body: {}", self.text);
        assert!(
            self.header("x-request-id").is_some(),
            "X-Request-Id on every response"
        );
        &self.json["data"]
    }
}

pub async fn send(request: reqwest::RequestBuilder) -> TestResponse {
    let response = request.send().await.expect("the service answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("a readable body");
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    TestResponse {
        status,
        headers,
        text,
        json,
    }
}

/// Logs go to the test output only with `TEST_LOG=1`.
fn init_test_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        meterapi::telemetry::init(meterapi::config::AppEnv::Test);
    }
}

pub mod smtp;

impl TestApp {
    /// The service's clock, to move time forward instead of sleeping.
    pub fn clock(&self) -> std::sync::Arc<meterapi::clock::Clock> {
        self.clock.clone()
    }
}

pub mod stripe;

/// The password of every user made by `create_user`.
pub const USER_PASSWORD: &str = "password123";

/// An Argon2id hash of `password` with these parameters and a fixed salt, made here apart from
/// the service, to plant accounts and old hashes.
pub fn argon2_hash(password: &str, memory_kib: u32, iterations: u32) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(memory_kib, iterations, 1, None).unwrap();
    let salt = SaltString::from_b64("dGVzdHNhbHR0ZXN0c2FsdA").unwrap();
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

/// Inserts an account (`role` is `user` or `admin`) with `USER_PASSWORD`, logs it in through the
/// API and returns its id and session token. The app must use the cheap Argon2 parameters of
/// `cheap_hashing`.
pub async fn create_user(app: &TestApp, email: &str, role: &str) -> (uuid::Uuid, String) {
    let client = app.user(email, role).await;
    (client.id, client.token)
}

/// A client acting as one logged-in account: every request carries its session.
#[derive(Clone)]
pub struct Client {
    pub id: uuid::Uuid,
    pub token: String,
    address: String,
    http: reqwest::Client,
}

impl Client {
    /// A request with this account's session, to add headers or a body to.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{}", self.address, path))
            .bearer_auth(&self.token)
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> TestResponse {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        send(request).await
    }

    pub async fn get(&self, path: &str) -> TestResponse {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> TestResponse {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> TestResponse {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> TestResponse {
        self.call(Method::DELETE, path, None).await
    }

    /// A new API key of this account.
    pub async fn new_key(&self) -> String {
        let response = self
            .post("/myapi/keys", serde_json::json!({"name": "test key"}))
            .await;
        response.assert_ok()["key"].as_str().unwrap().to_owned()
    }
}

impl TestApp {
    /// Inserts an account (`role` is `user` or `admin`) with `USER_PASSWORD` and logs it in
    /// through the API. The app must hash with `cheap_hashing`'s parameters.
    pub async fn user(&self, email: &str, role: &str) -> Client {
        let id: uuid::Uuid = sqlx::query_scalar(
            "INSERT INTO users (email, password_hash, role) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(email)
        .bind(argon2_hash(USER_PASSWORD, 64, 1))
        .bind(role)
        .fetch_one(&self.pool)
        .await
        .unwrap();
        let login = serde_json::json!({"email": email, "password": USER_PASSWORD});
        let response = self.post_json("/myapi/auth/login", &login).await;
        let token = response.assert_ok()["token"].as_str().unwrap().to_owned();
        self.client_as(id, token)
    }

    /// A client acting as the account `id` with the session `token`.
    pub fn client_as(&self, id: uuid::Uuid, token: String) -> Client {
        Client {
            id,
            token,
            address: self.address.clone(),
            http: self.client.clone(),
        }
    }

    /// The number of rows of `table`.
    pub async fn count(&self, table: &str) -> i64 {
        let query = sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}"));
        sqlx::query_scalar(query)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// An admin grant of `amount` credits to `user_id`.
    pub async fn fund(&self, admin: &Client, user_id: uuid::Uuid, amount: i64) {
        let path = format!("/myapi/admin/users/{user_id}/credits");
        let body = serde_json::json!({"amount": amount, "reason": "test funds"});
        admin.post(&path, body).await.assert_ok();
    }

    /// Sets the limits of the free plan, which applies to every account without a plan.
    pub async fn set_free_limits(
        &self,
        admin: &Client,
        rps: i64,
        rph: i64,
        monthly_quota: Option<i64>,
    ) {
        let free: i64 = sqlx::query_scalar("SELECT id FROM plans WHERE plan_type = 'free'")
            .fetch_one(&self.pool)
            .await
            .unwrap();
        let body = serde_json::json!({"name": "Free", "plan_type": "free", "amount_cents": 0,
            "rps_limit": rps, "rph_limit": rph, "monthly_quota": monthly_quota});
        admin
            .put(&format!("/myapi/admin/plans/{free}"), body)
            .await
            .assert_ok();
    }
}

/// Decodes quoted-printable text (soft line breaks joined, `=XX` bytes restored), which is how
/// a mail client shows the links and codes of a mail.
pub fn decode_quoted_printable(text: &str) -> String {
    let joined = text.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'=', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The token of the reset link in a (decoded) reset mail.
pub fn reset_token(mail: &str) -> String {
    let at = mail.find("reset-password?token=").expect("a reset link") + 21;
    mail[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

pub mod scene;

impl TestConfig {
    /// Argon2 parameters cheap enough for tests (and matching `create_user`'s hashes).
    pub fn cheap_hashing(self) -> Self {
        self.var("ARGON2_MEMORY_KIB", "64")
            .var("ARGON2_ITERATIONS", "1")
    }
}

/// `sum(ledger entries) == balance` for every account, and no balance below zero.
pub async fn assert_ledger_consistent(pool: &PgPool) {
    let broken: i64 = sqlx::query_scalar(LEDGER_BROKEN)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(broken, 0, "an account's balance disagrees with its ledger");
}

pub mod pg_proxy;
pub mod upstream;

/// One column of a user's credit account (`balance` or `reserved`), 0 without an account.
pub async fn credit_account(pool: &PgPool, user_id: uuid::Uuid, column: &str) -> i64 {
    let query =
        format!("SELECT COALESCE((SELECT {column} FROM credit_accounts WHERE user_id = $1), 0)");
    sqlx::query_scalar(sqlx::AssertSqlSafe(query))
        .bind(user_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Waits (up to 10 s) until the user's balance is `expected`, as the gateway settles once a
/// tick; returns the last balance seen.
pub async fn settled_balance(pool: &PgPool, user_id: uuid::Uuid, expected: i64) -> i64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let balance = credit_account(pool, user_id, "balance").await;
        if balance == expected || std::time::Instant::now() > deadline {
            return balance;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Says why a test cannot run here and returns, so the test ends without checking anything:
/// under `CI=true` a missing service is a failure, never a skip; elsewhere the reason is printed
/// and written to `target/tmp/skipped-tests.log`, which `.ci/run` counts into its closing line.
pub fn skip(test: &str, reason: &str) {
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("{test} cannot run under CI: {reason}");
    }
    eprintln!("skipped {test}: {reason}");
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped-tests.log");
    let line = format!("{test}: {reason}\n");
    use std::io::Write;
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        file.write_all(line.as_bytes()).ok();
    }
}

/// `REDIS_URL`, or None after recording the skip of `test`.
pub fn redis_url(test: &str) -> Option<String> {
    let url = std::env::var("REDIS_URL")
        .ok()
        .filter(|url| !url.is_empty());
    if url.is_none() {
        skip(
            test,
            "REDIS_URL is unset, so there is no Redis to share limits through",
        );
    }
    url
}

/// Polls `probe` every 20 ms until it yields a value, and returns it; panics naming `what` when
/// `within` passes first. Tests wait for a state with it instead of sleeping a fixed time.
pub async fn eventually<T, F, Fut>(within: std::time::Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not within {within:?}: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A private cluster a test started itself, stopped when the guard is dropped, panics included,
/// so a failing test leaves no server behind its deleted directory.
pub struct ClusterGuard(pub EmbeddedCluster);

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        // Already stopped by the test is fine: pg_ctl then only says so.
        self.0.stop_blocking().ok();
    }
}

/// SHA-256 of `text`, computed here apart from the service, for checking what it stores.
pub fn sha256(text: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).to_vec()
}

/// A new, empty database on the test server: its name and URL (dropped with the server's other
/// test databases only when a test drops it).
pub async fn empty_database() -> (String, String) {
    let database = format!("test_{}", uuid::Uuid::new_v4().simple());
    let statement = sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}"));
    let mut admin = admin_connection().await;
    sqlx::raw_sql(statement)
        .execute(&mut admin)
        .await
        .expect("CREATE DATABASE");
    admin.close().await.ok();
    let url = database_url(server_url().await, &database);
    (database, url)
}

/// Drops a database made by `empty_database`.
pub async fn drop_test_database(database: &str) {
    drop_database(database).await;
}
