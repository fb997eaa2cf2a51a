//! The hosted console: its pages over HTTP (the headers that keep a browser strict, the
//! reader's language, the embedded assets), and the whole product walked in a real browser
//! (Debian's Chromium driven through ChromeDriver) from sign-up to a metered call.

mod support;

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client as Browser, ClientBuilder, Locator};
use futures_util::FutureExt;
use reqwest::Method;
use serde_json::{Value, json};
use support::scene::Scene;
use support::stripe::{completed_session, event};
use support::{TestConfig, USER_PASSWORD, eventually, send, spawn_app};

const PAGES: &[&str] = &[
    "/login",
    "/signup",
    "/forgot-password",
    "/reset-password",
    "/dashboard",
    "/keys",
    "/plans",
    "/billing",
    "/billing/success",
    "/billing/cancel",
    "/ledger",
    "/usage",
    "/settings",
    "/admin/users",
    "/admin/plans",
    "/admin/providers",
    "/admin/orders",
    "/admin/redemption",
];

#[tokio::test]
async fn every_page_is_a_shell_under_a_strict_policy() {
    let app = spawn_app().await;
    for path in PAGES {
        let page = app.get(path).await;
        assert_eq!(page.status, 200, "{path}");
        assert_eq!(
            page.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        let policy = page.header("content-security-policy").unwrap();
        assert!(policy.contains("script-src 'self';"), "{policy}");
        assert!(policy.contains("default-src 'none'"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        assert!(!policy.contains("unsafe"), "{policy}");
        assert_eq!(page.header("x-frame-options"), Some("DENY"));
        assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
        // No script the policy would have to allow: every <script> is the bundled file or a
        // JSON data block, which browsers never run.
        for script in page.text.split("<script").skip(1) {
            let tag = &script[..script.find('>').unwrap()];
            assert!(
                tag.contains(r#"type="module" src="/assets/console.js""#)
                    || tag.contains(r#"type="application/json""#),
                "{path}: an inline script: <script{tag}>"
            );
        }
        assert!(!page.text.contains(" style="), "{path}: an inline style");
        assert!(
            !page.text.contains(" onclick="),
            "{path}: an inline handler"
        );
        assert!(page.text.contains(r#"<html lang="en">"#), "{path}");
    }
    // The shell holds no data: a page asks the API with the tab's session.
    let home = app.get("/").await;
    assert_eq!(home.status, 302);
    assert_eq!(home.header("location"), Some("/dashboard"));
}

#[tokio::test]
async fn pages_speak_the_readers_language() {
    let app = spawn_app().await;
    let page = |headers: &[(&str, &str)], path: &str| {
        let mut request = app.request(Method::GET, path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        send(request)
    };
    let browser_zh = page(&[("accept-language", "zh-CN,zh;q=0.9,en;q=0.8")], "/login").await;
    assert!(browser_zh.text.contains(r#"<html lang="zh">"#));
    assert!(browser_zh.text.contains("登录"));
    // The script gets the same words.
    assert!(browser_zh.text.contains(r#""log_in":"登录""#));

    let browser_en = page(&[("accept-language", "fr, en;q=0.5")], "/login").await;
    assert!(browser_en.text.contains(r#"<html lang="en">"#));
    assert!(browser_en.text.contains("Log in"));

    assert!(
        page(&[("x-lang", "zh")], "/signup")
            .await
            .text
            .contains(r#"lang="zh""#)
    );

    // `?lang=` wins and is remembered for the next pages.
    let chosen = page(&[("accept-language", "en")], "/login?lang=zh").await;
    assert!(chosen.text.contains(r#"<html lang="zh">"#));
    let cookie = chosen.header("set-cookie").unwrap().to_owned();
    assert!(cookie.starts_with("lang=zh;"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    let remembered = page(&[("accept-language", "en"), ("cookie", "lang=zh")], "/keys").await;
    assert!(remembered.text.contains(r#"<html lang="zh">"#));
    let nonsense = page(&[("cookie", "lang=klingon")], "/keys").await;
    assert!(nonsense.text.contains(r#"<html lang="en">"#));
}

#[tokio::test]
async fn the_script_and_styles_come_from_the_binary_and_are_revalidated_by_tag() {
    let app = spawn_app().await;
    for (path, content_type) in [
        ("/assets/console.js", "text/javascript; charset=utf-8"),
        ("/assets/core.js", "text/javascript; charset=utf-8"),
        ("/assets/admin.js", "text/javascript; charset=utf-8"),
        ("/assets/console.css", "text/css; charset=utf-8"),
        ("/favicon.svg", "image/svg+xml"),
    ] {
        let first = app.get(path).await;
        assert_eq!(first.status, 200, "{path}");
        assert_eq!(first.header("content-type"), Some(content_type));
        assert!(!first.text.is_empty());
        let tag = first.header("etag").unwrap().to_owned();
        let again = send(
            app.request(Method::GET, path)
                .header("if-none-match", tag.clone()),
        )
        .await;
        assert_eq!(again.status, 304, "{path}");
        assert!(again.text.is_empty());
        let other = send(
            app.request(Method::GET, path)
                .header("if-none-match", "\"something-else\""),
        )
        .await;
        assert_eq!(other.status, 200, "{path}");
    }
}

/// Every word a page or the script asks for exists in both languages.
#[test]
fn every_word_the_console_uses_is_translated() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let strings = |lang: &str| -> serde_json::Map<String, Value> {
        let path = root.join(format!("templates/console/strings/{lang}.json"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let (en, zh) = (strings("en"), strings("zh"));
    // Templates write `{{ t.word }}`; the script writes `t("word")`.
    let mut sources = Vec::new();
    for entry in files_under(&root.join("assets/console")) {
        if entry.extension().is_some_and(|ext| ext == "js") {
            sources.push((std::fs::read_to_string(entry).unwrap(), "t(\""));
        }
    }
    for entry in files_under(&root.join("templates/console")) {
        if entry.extension().is_some_and(|ext| ext == "html") {
            sources.push((std::fs::read_to_string(entry).unwrap(), "{{ t."));
        }
    }
    let mut used = Vec::new();
    for (source, marker) in &sources {
        let pieces: Vec<&str> = source.split(marker).collect();
        for (before, piece) in pieces.iter().zip(&pieces[1..]) {
            let word: String = piece
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            // `t("` ends `onSubmit("` too: only a call of `t` itself counts.
            let call = before
                .chars()
                .last()
                .is_none_or(|c| !c.is_alphanumeric() && c != '_' && c != '.');
            let closed = *marker == "{{ t." || piece[word.len()..].starts_with('"');
            if !word.is_empty() && closed && call {
                used.push(word);
            }
        }
    }
    assert!(
        used.len() > 100,
        "the scan found the words ({})",
        used.len()
    );
    for word in used {
        assert!(en.contains_key(&word), "`{word}` has no English");
        assert!(zh.contains_key(&word), "`{word}` has no Chinese");
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

// ---- the walk in a browser ----------------------------------------------------------------

/// Chromium and ChromeDriver from Debian's packages, a fresh profile, headless.
struct Chromium {
    browser: Browser,
    driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

impl Drop for Chromium {
    /// ChromeDriver runs in a process group of its own with the browser it started: killing
    /// the group leaves no Chromium behind, whatever the walk did (killing the driver alone
    /// would orphan the browser).
    fn drop(&mut self) {
        if let Some(group) = self.driver.id() {
            std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{group}")])
                .status()
                .ok();
        }
    }
}

const DRIVER: &str = "chromedriver";

async fn chromium(test: &str) -> Option<Chromium> {
    let installed = std::process::Command::new(DRIVER)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !installed {
        support::skip(
            test,
            "ChromeDriver is not installed (apt-get install chromium chromium-driver; .ci/run \
             installs them)",
        );
        return None;
    }
    let port = free_port();
    let driver = tokio::process::Command::new(DRIVER)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("ChromeDriver starts");
    let profile = tempfile::tempdir().unwrap();
    // The flags keep Chromium off the network this machine does not have (its background
    // services), and root-friendly (no sandbox) in CI.
    let args = vec![
        "--headless=new".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--disable-quic".to_owned(),
        "--no-first-run".to_owned(),
        "--disable-background-networking".to_owned(),
        "--disable-component-update".to_owned(),
        "--disable-sync".to_owned(),
        "--window-size=1280,900".to_owned(),
        "--lang=en-US".to_owned(),
        format!("--user-data-dir={}", profile.path().display()),
    ];
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        json!({"binary": "/usr/bin/chromium", "args": args}),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let browser = loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let attempt = ClientBuilder::new(connector)
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await;
        match attempt {
            Ok(browser) => break browser,
            Err(error) if Instant::now() > deadline => panic!("Chromium did not start: {error}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    Some(Chromium {
        browser,
        driver,
        _profile: profile,
    })
}

/// A page of the console as a person uses it.
struct Tab<'a> {
    browser: &'a Browser,
    base: String,
}

const PATIENCE: Duration = Duration::from_secs(15);

impl Tab<'_> {
    /// Opens `path` and waits until its script has filled it.
    async fn open(&self, path: &str) {
        self.browser
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap();
        self.ready().await;
    }

    async fn ready(&self) {
        self.find("body[data-ready]").await;
    }

    async fn find(&self, css: &str) -> Element {
        self.browser
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|error| panic!("no `{css}` on the page: {error}"))
    }

    async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap();
    }

    async fn path(&self) -> String {
        self.browser.current_url().await.unwrap().path().to_owned()
    }

    /// Waits until the address's path is `path`.
    async fn arrives_at(&self, path: &str) {
        eventually(PATIENCE, &format!("the browser at {path}"), || async {
            (self.path().await == path).then_some(())
        })
        .await;
        self.ready().await;
    }

    /// Waits until `css` shows text for which `accept` holds, and returns it.
    async fn text_of(&self, css: &str, accept: impl Fn(&str) -> bool) -> String {
        eventually(
            PATIENCE,
            &format!("`{css}` to show the expected text"),
            || async {
                let text = self
                    .browser
                    .find(Locator::Css(css))
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                accept(&text).then_some(text)
            },
        )
        .await
    }

    async fn screenshot(&self, path: &Path) {
        let png = self.browser.screenshot().await.unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

const WALKER: &str = "walker@example.com";
const WALKER_PASSWORD: &str = "walking-the-console";

/// A loopback port nothing listens on now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A browser and the service with its fakes, whose public address is its own (the browser
/// follows Stripe's redirects and the reset link back to it); None after recording the skip.
async fn browser_scene(test: &str) -> Option<(Chromium, Scene, String)> {
    let chromium = chromium(test).await?;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let scene = Scene::builder()
        .config(
            TestConfig::default()
                .var("LISTEN_ADDR", format!("127.0.0.1:{port}"))
                .var("PUBLIC_URL", base.clone()),
        )
        .start()
        .await;
    scene.stripe.hosted_pages();
    Some((chromium, scene, base))
}

/// Runs a walk and ends the browser's session; when the walk fails, first saves what the
/// browser showed under `target/console-walk/`.
async fn walk_or_show(tab: &Tab<'_>, name: &str, walk: impl std::future::Future<Output = ()>) {
    let walked = AssertUnwindSafe(walk).catch_unwind().await;
    let ended = tab.browser.clone();
    if let Err(panic) = walked {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-walk");
        tab.screenshot(&dir.join(format!("{name}.png"))).await;
        if let Ok(source) = tab.browser.source().await {
            std::fs::write(dir.join(format!("{name}.html")), source).ok();
        }
        eprintln!(
            "the browser's last page: {}",
            dir.join(format!("{name}.png")).display()
        );
        ended.close().await.ok();
        std::panic::resume_unwind(panic);
    }
    ended.close().await.ok();
}

#[tokio::test]
async fn a_new_user_walks_from_sign_up_to_a_metered_call_and_an_admin_freezes_them() {
    let test = "a_new_user_walks_from_sign_up_to_a_metered_call_and_an_admin_freezes_them";
    let Some((chromium, scene, base)) = browser_scene(test).await else {
        return;
    };
    let tab = Tab {
        browser: &chromium.browser,
        base,
    };
    walk_or_show(&tab, "sign-up-walk", walk_the_console(&scene, &tab)).await;
}

#[tokio::test]
async fn the_account_billing_and_admin_pages_work_in_a_browser() {
    let test = "the_account_billing_and_admin_pages_work_in_a_browser";
    let Some((chromium, scene, base)) = browser_scene(test).await else {
        return;
    };
    let tab = Tab {
        browser: &chromium.browser,
        base,
    };
    walk_or_show(&tab, "account-walk", account_walk(&scene, &tab)).await;
}

async fn walk_the_console(scene: &Scene, tab: &Tab<'_>) {
    let starter = scene
        .admin()
        .post(
            "/myapi/admin/plans",
            json!({"name": "Starter", "plan_type": "one_time", "amount_cents": 900,
                "currency": "usd", "credits": 500, "rps_limit": 20, "rph_limit": 5000,
                "description": "500 credits to start with"}),
        )
        .await
        .assert_ok()["id"]
        .as_i64()
        .unwrap();

    // Sign up: captcha (the test code), the email code from the SMTP sink, a password.
    tab.open("/signup").await;
    tab.fill("form[data-form=signup] input[name=email]", WALKER)
        .await;
    tab.find("[data-captcha-image][src^='data:image/png']")
        .await;
    tab.fill("form[data-form=signup] input[name=captcha]", "pass")
        .await;
    tab.click("[data-action=send_code]").await;
    tab.text_of("[data-cooldown]", |text| !text.is_empty())
        .await;
    eventually(PATIENCE, "the email code in the inbox", || async {
        (!scene.smtp.mails_to(WALKER).is_empty()).then_some(())
    })
    .await;
    let code = scene.last_code(WALKER);
    tab.fill("form[data-form=signup] input[name=email_code]", &code)
        .await;
    tab.fill(
        "form[data-form=signup] input[name=password]",
        WALKER_PASSWORD,
    )
    .await;
    tab.click("form[data-form=signup] [type=submit]").await;
    tab.arrives_at("/dashboard").await;
    tab.text_of("[data-slot=who]", |text| text == WALKER).await;

    // Log out, and in again.
    tab.click("[data-action=logout]").await;
    tab.arrives_at("/login").await;
    log_in(tab, WALKER, WALKER_PASSWORD).await;
    tab.arrives_at("/dashboard").await;
    let credits = tab
        .text_of(".cards .card:nth-child(2) dd", |text| !text.is_empty())
        .await;
    assert_eq!(credits, "0");

    // Buy the plan: Checkout (the fake Stripe's page), Stripe's webhook, back to the console.
    tab.open("/plans").await;
    tab.click(&format!("article[data-plan-id='{starter}'] button"))
        .await;
    let session_id = eventually(
        PATIENCE,
        "the browser on Stripe's checkout page",
        || async {
            let url = tab.browser.current_url().await.ok()?;
            url.path().strip_prefix("/c/pay/").map(str::to_owned)
        },
    )
    .await;
    let (order_no, amount): (String, i64) =
        sqlx::query_as("SELECT order_no, amount_cents FROM orders WHERE status = 'pending'")
            .fetch_one(&scene.app.pool)
            .await
            .unwrap();
    assert_eq!(amount, 900);
    let paid = event(
        "checkout.session.completed",
        completed_session(&order_no, &session_id, amount, "paid"),
    );
    scene.deliver(&paid).await.assert_ok();
    tab.click("#pay").await;
    tab.arrives_at("/billing/success").await;
    tab.find("[data-slot=order][data-status=paid]").await;
    tab.open("/dashboard").await;
    tab.text_of(".cards .card:nth-child(2) dd", |text| text == "500")
        .await;
    save_for_the_readme(tab, "console-dashboard.png").await;

    // A key, shown once, and a call with it through the gateway.
    tab.open("/keys").await;
    tab.fill("form[data-form=create_key] input[name=name]", "walk key")
        .await;
    tab.click("form[data-form=create_key] [type=submit]").await;
    let key = tab
        .text_of("[data-slot=new_key_value]", |text| !text.is_empty())
        .await;
    tab.text_of("[data-slot=keys] tbody", |text| text.contains("walk key"))
        .await;
    let call = send(
        scene
            .app
            .request(Method::GET, "/api/v1/echo/walk")
            .header("X-API-Key", &key),
    )
    .await;
    assert_eq!(call.status, 200, "{}", call.text);

    // The usage chart shows the call once the gateway has settled it.
    eventually(PATIENCE, "the call on the usage chart", || async {
        tab.open("/usage").await;
        let chart = tab.find("[data-slot=chart]").await;
        let total = chart.attr("data-total").await.ok()??;
        (total == "1").then_some(())
    })
    .await;
    let bar = tab.find("svg.usage-chart rect[data-provider=echo]").await;
    assert_eq!(bar.attr("data-value").await.unwrap().as_deref(), Some("1"));
    tab.click("form[data-form=usage] select[name=metric] option[value=credits]")
        .await;
    tab.text_of("[data-slot=chart_caption]", |text| {
        text == "Credits in this period: 1"
    })
    .await;
    save_for_the_readme(tab, "console-usage.png").await;

    // An admin (in the same browser, after the user signs out) freezes the user.
    tab.click("[data-action=logout]").await;
    tab.arrives_at("/login").await;
    log_in(tab, "admin@example.com", USER_PASSWORD).await;
    tab.arrives_at("/dashboard").await;
    tab.find("[data-admin-only]:not([hidden])").await;
    tab.open("/admin/users").await;
    tab.fill("form[data-form=user_search] input[name=email]", "walker")
        .await;
    tab.click("form[data-form=user_search] [type=submit]").await;
    tab.text_of("[data-slot=users] tbody", |text| {
        text.contains(WALKER) && !text.contains("admin@example.com")
    })
    .await;
    tab.click("[data-slot=users] tbody tr button.danger").await;
    tab.browser.accept_alert().await.unwrap();
    tab.text_of("[data-slot=users] tbody", |text| text.contains("frozen"))
        .await;
    let status: String = sqlx::query_scalar("SELECT status FROM users WHERE email = $1")
        .bind(WALKER)
        .fetch_one(&scene.app.pool)
        .await
        .unwrap();
    assert_eq!(status, "frozen");
    let refused = send(
        scene
            .app
            .request(Method::GET, "/api/v1/echo/walk")
            .header("X-API-Key", &key),
    )
    .await;
    refused.assert_error(403, Some(40301));
}

async fn log_in(tab: &Tab<'_>, email: &str, password: &str) {
    tab.fill("form[data-form=login] input[name=email]", email)
        .await;
    tab.fill("form[data-form=login] input[name=password]", password)
        .await;
    tab.click("form[data-form=login] [type=submit]").await;
}

/// With `CONSOLE_SCREENSHOTS=<dir>`, the walk saves the pictures the README shows.
async fn save_for_the_readme(tab: &Tab<'_>, name: &str) {
    if let Ok(dir) = std::env::var("CONSOLE_SCREENSHOTS") {
        tab.screenshot(&Path::new(&dir).join(name)).await;
    }
}

const CALLER: &str = "caller@example.com";

/// The authenticator: a code from the enrolled secret (RFC 6238, as the tests of two-factor).
fn authenticator_code(secret: &str) -> String {
    let secret = totp_rs::Secret::try_from_base32(secret).unwrap();
    let totp = totp_rs::Builder::new().with_secret(secret).build().unwrap();
    totp.generate(chrono::Utc::now().timestamp() as u64)
        .to_string()
}

async fn account_walk(scene: &Scene, tab: &Tab<'_>) {
    // Forgotten password: the email's link, the token out of the address bar, a new password.
    tab.open("/forgot-password").await;
    tab.fill("form[data-form=forgot] input[name=email]", CALLER)
        .await;
    tab.find("[data-captcha-image][src^='data:image/png']")
        .await;
    tab.fill("form[data-form=forgot] input[name=captcha]", "pass")
        .await;
    tab.click("form[data-form=forgot] [type=submit]").await;
    tab.text_of("[data-notice]", |text| text.contains("reset link"))
        .await;
    let mail = eventually(PATIENCE, "the reset email", || async {
        scene.smtp.mails_to(CALLER).pop()
    })
    .await;
    let link = format!(
        "/reset-password?token={}",
        support::reset_token(&mail.decoded())
    );
    tab.open(&link).await;
    let address = tab.browser.current_url().await.unwrap();
    assert_eq!((address.path(), address.query()), ("/reset-password", None));
    tab.fill(
        "form[data-form=reset] input[name=password]",
        "a brand new secret",
    )
    .await;
    tab.click("form[data-form=reset] [type=submit]").await;
    tab.text_of("[data-notice]", |text| text.contains("new password is set"))
        .await;
    tab.open("/login").await;
    // The second step is there, but not shown before the first step asks for it.
    let second_step = tab.find("form[data-form=login_2fa]").await;
    assert!(!second_step.is_displayed().await.unwrap());
    log_in(tab, CALLER, "a brand new secret").await;
    tab.arrives_at("/dashboard").await;

    // Two-factor: set up with the authenticator, recovery codes once, then the second step.
    tab.open("/settings").await;
    tab.text_of("[data-field=email]", |text| text == CALLER)
        .await;
    tab.click("[data-slot=two_factor] button").await;
    let secret = tab
        .text_of("[data-slot=two_factor_secret]", |text| !text.is_empty())
        .await;
    tab.fill(
        "form[data-form=enable_2fa] input[name=code]",
        &authenticator_code(&secret),
    )
    .await;
    tab.click("form[data-form=enable_2fa] [type=submit]").await;
    let recovery = tab
        .text_of("[data-slot=recovery_list]", |text| !text.is_empty())
        .await;
    let recovery_code = recovery.lines().next().unwrap().trim().to_owned();
    tab.find("form[data-form=disable_2fa]:not([hidden])").await;
    tab.click("[data-action=logout]").await;
    tab.arrives_at("/login").await;
    log_in(tab, CALLER, "a brand new secret").await;
    tab.find("form[data-form=login]:is([hidden])").await;
    tab.find("form[data-form=login_2fa]:not([hidden])").await;
    tab.fill("form[data-form=login_2fa] input[name=code]", &recovery_code)
        .await;
    tab.click("form[data-form=login_2fa] [type=submit]").await;
    tab.arrives_at("/dashboard").await;
    tab.open("/settings").await;
    tab.text_of("[data-slot=sessions] tbody", |text| {
        text.contains("This session")
    })
    .await;

    // A redemption code on the dashboard, and the ledger's line for it.
    let batch = scene
        .admin()
        .post(
            "/myapi/admin/redemption-batches",
            json!({"count": 1, "credits": 100, "note": "walk"}),
        )
        .await;
    let code = batch.assert_ok()["codes"][0].as_str().unwrap().to_owned();
    tab.open("/dashboard").await;
    tab.fill("form[data-form=redeem] input[name=code]", &code)
        .await;
    tab.click("form[data-form=redeem] [type=submit]").await;
    tab.text_of("[data-notice]", |text| text.contains("100 credits added"))
        .await;
    tab.text_of(".cards .card:nth-child(2) dd", |text| text == "100")
        .await;
    tab.open("/ledger").await;
    tab.text_of("[data-slot=ledger] tbody", |text| {
        text.contains("+100") && text.contains("redemption")
    })
    .await;

    // An order paid outside Stripe shows on the billing page.
    let plan = scene
        .admin()
        .post(
            "/myapi/admin/plans",
            json!({"name": "Pack", "plan_type": "one_time", "amount_cents": 1500,
                "currency": "usd", "credits": 50, "rps_limit": 5, "rph_limit": 500}),
        )
        .await
        .assert_ok()["id"]
        .as_i64()
        .unwrap();
    let manual = json!({"user_id": scene.user().id, "plan_id": plan});
    let order = scene.admin().post("/myapi/admin/orders", manual).await;
    let order_no = order.assert_ok()["order_no"].as_str().unwrap().to_owned();
    tab.open("/billing").await;
    tab.text_of("[data-slot=orders] tbody", |text| {
        text.contains(&order_no) && text.contains("paid") && text.contains("$15.00")
    })
    .await;

    // Key controls in their dialog.
    tab.open("/keys").await;
    tab.fill("form[data-form=create_key] input[name=name]", "capped")
        .await;
    tab.click("form[data-form=create_key] [type=submit]").await;
    tab.text_of("[data-slot=keys] tbody", |text| text.contains("capped"))
        .await;
    tab.click("[data-slot=keys] tbody tr button").await;
    tab.fill("form[data-form=key_controls] input[name=rps_limit]", "5")
        .await;
    tab.fill("form[data-form=key_controls] input[name=cap_credits]", "50")
        .await;
    tab.fill("form[data-form=key_controls] input[name=providers]", "echo")
        .await;
    tab.click("form[data-form=key_controls] [type=submit]")
        .await;
    tab.text_of("[data-slot=keys] tbody", |text| {
        text.contains("5 per second") && text.contains("0 / 50") && text.contains("echo")
    })
    .await;
    // (The reset signed the fixture's own session out: the database tells what was saved.)
    let saved: (
        Option<i32>,
        Option<i64>,
        Option<String>,
        Option<Vec<String>>,
    ) = sqlx::query_as(
        "SELECT rps_limit, spend_cap_credits, spend_cap_period, providers FROM api_keys
         WHERE name = 'capped'",
    )
    .fetch_one(&scene.app.pool)
    .await
    .unwrap();
    let month = Some("month".to_owned());
    assert_eq!(
        saved,
        (Some(5), Some(50), month, Some(vec!["echo".to_owned()]))
    );

    // The admin's pages: a plan made with the form, the providers, one user's orders, a
    // redemption batch whose codes show once.
    tab.click("[data-action=logout]").await;
    tab.arrives_at("/login").await;
    log_in(tab, "admin@example.com", USER_PASSWORD).await;
    tab.arrives_at("/dashboard").await;
    tab.open("/admin/plans").await;
    tab.fill(
        "form[data-form=plan] input[name=name]",
        "Made in the console",
    )
    .await;
    tab.fill("form[data-form=plan] input[name=amount_cents]", "2500")
        .await;
    tab.fill("form[data-form=plan] input[name=credits]", "300")
        .await;
    tab.fill("form[data-form=plan] input[name=rps_limit]", "10")
        .await;
    tab.fill("form[data-form=plan] input[name=rph_limit]", "1000")
        .await;
    tab.click("form[data-form=plan] [type=submit]").await;
    tab.text_of("[data-slot=plans] tbody", |text| {
        text.contains("Made in the console")
    })
    .await;
    let made: i64 = sqlx::query_scalar("SELECT credits FROM plans WHERE name = $1")
        .bind("Made in the console")
        .fetch_one(&scene.app.pool)
        .await
        .unwrap();
    assert_eq!(made, 300);
    tab.open("/admin/providers").await;
    tab.text_of("[data-slot=providers] tbody", |text| text.contains("echo"))
        .await;
    tab.open(&format!("/admin/orders?user_id={}", scene.user().id))
        .await;
    tab.text_of("[data-slot=orders] tbody", |text| text.contains(&order_no))
        .await;
    tab.open("/admin/redemption").await;
    tab.fill("form[data-form=batch] input[name=count]", "2")
        .await;
    tab.fill("form[data-form=batch] input[name=credits]", "5")
        .await;
    tab.fill("form[data-form=batch] input[name=note]", "from the console")
        .await;
    tab.click("form[data-form=batch] [type=submit]").await;
    let codes = eventually(PATIENCE, "the new codes", || async {
        let area = tab
            .browser
            .find(Locator::Css("[data-slot=codes_text]"))
            .await
            .ok()?;
        let value = area.prop("value").await.ok()??;
        (!value.is_empty()).then_some(value)
    })
    .await;
    assert_eq!(codes.lines().count(), 2, "{codes}");
    tab.text_of("[data-slot=batches] tbody", |text| {
        text.contains("from the console")
    })
    .await;

    // The same pages in Chinese.
    tab.open("/dashboard?lang=zh").await;
    tab.text_of("header nav a[href='/dashboard']", |text| text == "概览")
        .await;
    tab.text_of(".cards .card:nth-child(2) dt", |text| text == "额度")
        .await;

    // Three wrong passwords from this address: the next login, and its second step, ask for the
    // captcha, and pass with it.
    tab.click("[data-action=logout]").await;
    tab.arrives_at("/login").await;
    for _ in 0..3 {
        log_in(tab, CALLER, "not the password").await;
        tab.text_of("form[data-form=login] [data-error]", |text| {
            text.contains("(40111)")
        })
        .await;
    }
    log_in(tab, CALLER, "a brand new secret").await;
    tab.text_of("form[data-form=login] [data-error]", |text| {
        text.contains("(40002)")
    })
    .await;
    let image = "[data-captcha]:not([hidden]) img[src^='data:image/png']";
    tab.find(&format!("form[data-form=login] {image}")).await;
    tab.fill("form[data-form=login] input[name=captcha]", "pass")
        .await;
    tab.click("form[data-form=login] [type=submit]").await;
    tab.find("form[data-form=login_2fa]:not([hidden])").await;
    let second_recovery_code = recovery.lines().nth(1).unwrap().trim().to_owned();
    tab.fill(
        "form[data-form=login_2fa] input[name=code]",
        &second_recovery_code,
    )
    .await;
    tab.click("form[data-form=login_2fa] [type=submit]").await;
    tab.text_of("form[data-form=login_2fa] [data-error]", |text| {
        text.contains("(40002)")
    })
    .await;
    tab.find(&format!("form[data-form=login_2fa] {image}"))
        .await;
    tab.fill("form[data-form=login_2fa] input[name=captcha]", "pass")
        .await;
    tab.click("form[data-form=login_2fa] [type=submit]").await;
    tab.arrives_at("/dashboard").await;
}
