//! Typed settings from the environment (and `.env`, read by the binary). Every variable of the
//! contract's configuration table is parsed and validated here, once; a bad value stops startup
//! with a message that names the variable and what is wrong with it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgConnectOptions;
use url::Url;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Test,
    Production,
}

/// Where the database is: a URL, or the private cluster under `DATA_DIR/postgres`.
#[derive(Clone, Debug)]
pub enum DatabaseSettings {
    Url(SecretString),
    Embedded,
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub app_env: AppEnv,
    pub listen_addr: SocketAddr,
    pub public_url: Url,
    pub database: DatabaseSettings,
    pub data_dir: PathBuf,
    pub redis_url: Option<SecretString>,
    pub smtp_url: Option<SecretString>,
    /// `SMTP_CA_FILE`, read at startup: PEM certificates trusted for the SMTP server's TLS on
    /// top of the built-in roots (a private CA or a self-signed server).
    pub smtp_ca_pem: Option<String>,
    pub mail_from: String,
    pub stripe_secret_key: Option<SecretString>,
    pub stripe_webhook_secret: Option<SecretString>,
    pub stripe_api_base: Url,
    pub admin_emails: Vec<String>,
    pub captcha_test_code: Option<String>,
    /// HTTP worker threads (`HTTP_WORKERS`); the number of cores by default.
    pub http_workers: usize,
    /// Several workers run on a core each (`HTTP_PIN_WORKERS`, true by default).
    pub pin_workers: bool,
    /// How long one email may take to send before it counts as failed.
    pub mail_timeout: Duration,
    pub auth: AuthSettings,
    /// Prefix of every Redis key, so several deployments (or tests) can share one Redis.
    pub redis_key_prefix: String,
    pub gateway: GatewaySettings,
    pub cors: CorsSettings,
    /// `TRUSTED_PROXIES`: the reverse proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `METRICS_TOKEN`: when set, `/metrics` needs `Authorization: Bearer <token>`.
    pub metrics_token: Option<SecretString>,
    /// `BILLING_GRACE_DAYS`: how long a past-due subscription, or one whose period ended with no
    /// renewal heard of, keeps its plan's limits before the account falls back to the free plan.
    pub billing_grace: chrono::Duration,
}

/// Which browser origins may call the service from another origin.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CorsSettings {
    /// `CORS_ALLOWED_ORIGINS`.
    pub allowed_origins: AllowedOrigins,
    /// `CORS_GATEWAY`: the gateway (`/api/v1/...`) answers those origins too.
    pub gateway: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// These origins, serialized as browsers send them (`https://app.example.com`); none: no
    /// cross-origin access.
    Listed(Vec<String>),
    /// `*`: any origin (never with credentials; refused in production).
    Any,
}

impl Default for AllowedOrigins {
    fn default() -> Self {
        AllowedOrigins::Listed(Vec::new())
    }
}

/// Tunables of the gateway.
#[derive(Clone, Debug)]
pub struct GatewaySettings {
    /// Gateway calls in flight on one instance before 50301.
    pub max_in_flight: usize,
    /// Gateway calls per second across every instance (through Redis when set) before 50301.
    pub global_rps: Option<u32>,
    /// How long an unrenewed credit lease lives (the reserve of a dead instance returns after it).
    pub lease_ttl: Duration,
    /// How often spent credits and usage are settled into PostgreSQL.
    pub settle_interval: Duration,
    /// Keys not found per client and minute before the client's unknown keys answer 429.
    pub failed_keys_per_ip_per_minute: u32,
    /// Consecutive failed calls that open a provider's circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker answers 50201 before it lets a probe through.
    pub breaker_cool_down: Duration,
}

/// Tunables of the Auth module. The defaults are the contract's; tests lower the costs.
#[derive(Clone, Debug)]
pub struct AuthSettings {
    pub email_code_cooldown: Duration,
    /// How often expired sessions, captchas, codes, tokens and failures are removed.
    pub housekeeping_interval: Duration,
    pub session_ttl: Duration,
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    /// Threads that hash passwords: one core fewer than the machine has (at least one), so a
    /// login flood never takes the core the gateway answers on.
    pub argon2_threads: u32,
    /// Login attempts per IP and minute before 429.
    pub login_per_ip_per_minute: u32,
    /// Emails (codes and reset links) requested per IP and hour before 429.
    pub sends_per_ip_per_hour: u32,
    /// Wrong email codes an address may receive in a day, across re-sends.
    pub code_guesses_per_address_per_day: u32,
    /// Captchas per IP and minute before 429.
    pub captchas_per_ip_per_minute: u32,
}

/// A variable that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {variable}: {problem}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

fn invalid(variable: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        problem: problem.into(),
    }
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Settings, ConfigError> {
        Settings::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, so tests can pass their own variables. An empty value
    /// counts as unset, as `.env` files write `NAME=` for "nothing".
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };

        let app_env = match get("APP_ENV").as_deref() {
            None | Some("development") => AppEnv::Development,
            Some("test") => AppEnv::Test,
            Some("production") => AppEnv::Production,
            Some(other) => {
                return Err(invalid(
                    "APP_ENV",
                    format!("unknown environment {other:?}; use development, test or production"),
                ));
            }
        };

        let listen_addr = match get("LISTEN_ADDR") {
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
            Some(value) => value.parse().map_err(|_| {
                invalid(
                    "LISTEN_ADDR",
                    format!("{value:?} is not an address like 127.0.0.1:8080"),
                )
            })?,
        };

        let public_url = match get("PUBLIC_URL") {
            None => Url::parse(&format!("http://{listen_addr}")).expect("an address is a host"),
            Some(value) => parse_http_url("PUBLIC_URL", &value)?,
        };

        let database = match get("DATABASE_URL") {
            None => DatabaseSettings::Embedded,
            Some(value) => {
                validate_database_url(&value)?;
                DatabaseSettings::Url(SecretString::from(value))
            }
        };

        let redis_url = get("REDIS_URL")
            .map(|value| validate_scheme("REDIS_URL", &value, &["redis", "rediss"]))
            .transpose()?;
        let smtp_url = get("SMTP_URL")
            .map(|value| validate_scheme("SMTP_URL", &value, &["smtp", "smtps"]))
            .transpose()?;
        let smtp_ca_pem = get("SMTP_CA_FILE")
            .map(|path| read_ca_file("SMTP_CA_FILE", &path))
            .transpose()?;

        let mail_from = get("MAIL_FROM").unwrap_or_else(|| String::from("no-reply@localhost"));
        if !mail_from.contains('@') {
            return Err(invalid("MAIL_FROM", "must be an email address"));
        }

        let stripe_api_base = match get("STRIPE_API_BASE") {
            None => Url::parse("https://api.stripe.com/").expect("a valid constant"),
            Some(value) => parse_http_url("STRIPE_API_BASE", &value)?,
        };

        let admin_emails = get("ADMIN_EMAILS")
            .map(|list| {
                list.split(',')
                    .map(|email| email.trim().to_lowercase())
                    .filter(|email| !email.is_empty())
                    .collect()
            })
            .unwrap_or_default();

        let captcha_test_code = get("CAPTCHA_TEST_CODE");
        if captcha_test_code.is_some() && app_env == AppEnv::Production {
            return Err(invalid(
                "CAPTCHA_TEST_CODE",
                "a fixed captcha answer is refused when APP_ENV=production",
            ));
        }

        let http_workers = match get("HTTP_WORKERS") {
            None => std::thread::available_parallelism().map_or(2, usize::from),
            Some(value) => value
                .parse::<usize>()
                .ok()
                .filter(|workers| (1..=256).contains(workers))
                .ok_or_else(|| invalid("HTTP_WORKERS", "must be a number from 1 to 256"))?,
        };
        let pin_workers = match get("HTTP_PIN_WORKERS").as_deref() {
            None | Some("true") => true,
            Some("false") => false,
            Some(_) => return Err(invalid("HTTP_PIN_WORKERS", "must be true or false")),
        };

        let number = |name: &'static str, default: u64, range: std::ops::RangeInclusive<u64>| {
            match get(name) {
                None => Ok(default),
                Some(value) => value
                    .parse::<u64>()
                    .ok()
                    .filter(|n| range.contains(n))
                    .ok_or_else(|| {
                        invalid(
                            name,
                            format!("must be a number from {} to {}", range.start(), range.end()),
                        )
                    }),
            }
        };
        let small = |name: &'static str, default: u64, range: std::ops::RangeInclusive<u64>| {
            number(name, default, range).map(|n| u32::try_from(n).unwrap_or(u32::MAX))
        };
        let auth = AuthSettings {
            email_code_cooldown: Duration::from_secs(number(
                "EMAIL_CODE_COOLDOWN_SECS",
                60,
                1..=86_400,
            )?),
            session_ttl: Duration::from_secs(3600 * number("SESSION_TTL_HOURS", 168, 1..=8_760)?),
            housekeeping_interval: Duration::from_secs(number(
                "HOUSEKEEPING_INTERVAL_SECS",
                600,
                1..=86_400,
            )?),
            argon2_memory_kib: small("ARGON2_MEMORY_KIB", 19_456, 8..=1_048_576)?,
            argon2_iterations: small("ARGON2_ITERATIONS", 2, 1..=16)?,
            argon2_parallelism: small("ARGON2_PARALLELISM", 1, 1..=16)?,
            argon2_threads: small(
                "ARGON2_THREADS",
                u64::from(default_hashing_threads()),
                1..=1024,
            )?,
            login_per_ip_per_minute: small("AUTH_LOGIN_PER_IP_PER_MINUTE", 30, 1..=100_000)?,
            sends_per_ip_per_hour: small("AUTH_SENDS_PER_IP_PER_HOUR", 20, 1..=100_000)?,
            code_guesses_per_address_per_day: small(
                "AUTH_CODE_GUESSES_PER_ADDRESS_PER_DAY",
                20,
                1..=100_000,
            )?,
            captchas_per_ip_per_minute: small("AUTH_CAPTCHAS_PER_IP_PER_MINUTE", 60, 1..=100_000)?,
        };
        let mail_timeout = Duration::from_secs(number("MAIL_TIMEOUT_SECS", 10, 1..=300)?);
        let redis_key_prefix = get("REDIS_KEY_PREFIX").unwrap_or_else(|| String::from("meterapi"));
        let gateway = GatewaySettings {
            max_in_flight: number("GATEWAY_MAX_IN_FLIGHT", 4096, 1..=1_000_000)? as usize,
            global_rps: get("GATEWAY_GLOBAL_RPS")
                .map(|_| small("GATEWAY_GLOBAL_RPS", 0, 1..=10_000_000))
                .transpose()?,
            lease_ttl: Duration::from_secs(number("GATEWAY_LEASE_TTL_SECS", 15, 2..=3600)?),
            settle_interval: Duration::from_millis(number("GATEWAY_SETTLE_MS", 1000, 50..=60_000)?),
            breaker_failures: small("GATEWAY_BREAKER_FAILURES", 5, 1..=10_000)?,
            breaker_cool_down: Duration::from_millis(number(
                "GATEWAY_BREAKER_COOL_DOWN_MS",
                5000,
                10..=3_600_000,
            )?),
            failed_keys_per_ip_per_minute: small(
                "GATEWAY_FAILED_KEYS_PER_IP_PER_MINUTE",
                60,
                1..=1_000_000,
            )?,
        };
        let cors = CorsSettings {
            allowed_origins: match get("CORS_ALLOWED_ORIGINS") {
                None => AllowedOrigins::default(),
                Some(list) => parse_allowed_origins(&list, app_env)?,
            },
            gateway: match get("CORS_GATEWAY").as_deref() {
                None | Some("false") => false,
                Some("true") => true,
                Some(_) => return Err(invalid("CORS_GATEWAY", "must be true or false")),
            },
        };

        let trusted_proxies = get("TRUSTED_PROXIES")
            .map(|list| parse_trusted_proxies(&list))
            .transpose()?
            .unwrap_or_default();
        let metrics_token = get("METRICS_TOKEN").map(SecretString::from);
        let billing_grace = chrono::Duration::days(
            i64::try_from(number("BILLING_GRACE_DAYS", 3, 0..=90)?).unwrap_or(3),
        );

        // In production, defaults that would fail silently are refused: links in emails would
        // point at the listen address, and emails would go to files nobody reads.
        if app_env == AppEnv::Production {
            if get("PUBLIC_URL").is_none() {
                return Err(invalid(
                    "PUBLIC_URL",
                    "must be set when APP_ENV=production: links in emails and Stripe's return \
                     addresses are built from it",
                ));
            }
            if smtp_url.is_none() {
                return Err(invalid(
                    "SMTP_URL",
                    "must be set when APP_ENV=production: without it emails are only written to \
                     files under DATA_DIR",
                ));
            }
        }

        Ok(Settings {
            app_env,
            listen_addr,
            public_url,
            database,
            data_dir: PathBuf::from(get("DATA_DIR").unwrap_or_else(|| String::from(".data"))),
            redis_url,
            smtp_url,
            smtp_ca_pem,
            mail_from,
            stripe_secret_key: get("STRIPE_SECRET_KEY").map(SecretString::from),
            stripe_webhook_secret: get("STRIPE_WEBHOOK_SECRET").map(SecretString::from),
            stripe_api_base,
            admin_emails,
            captcha_test_code,
            http_workers,
            pin_workers,
            mail_timeout,
            auth,
            redis_key_prefix,
            gateway,
            cors,
            trusted_proxies,
            metrics_token,
            billing_grace,
        })
    }

    /// The connection options of `DATABASE_URL`, when it is set.
    pub fn database_url_options(&self) -> Option<PgConnectOptions> {
        match &self.database {
            DatabaseSettings::Url(url) => PgConnectOptions::from_str(url.expose_secret()).ok(),
            DatabaseSettings::Embedded => None,
        }
    }
}

fn parse_http_url(variable: &'static str, value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value)
        .map_err(|error| invalid(variable, format!("{value:?} is not a URL: {error}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(invalid(
            variable,
            format!("{value:?} must be an http(s) URL with a host"),
        ));
    }
    Ok(url)
}

/// `*` alone, or comma-separated origins `scheme://host[:port]` (http or https, nothing after
/// the authority), kept in the form browsers send in `Origin`: lower case, default port dropped.
fn parse_allowed_origins(list: &str, app_env: AppEnv) -> Result<AllowedOrigins, ConfigError> {
    const VARIABLE: &str = "CORS_ALLOWED_ORIGINS";
    let entries: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .collect();
    if entries.contains(&"*") {
        if entries.len() > 1 {
            return Err(invalid(VARIABLE, "`*` cannot be combined with origins"));
        }
        if app_env == AppEnv::Production {
            return Err(invalid(
                VARIABLE,
                "`*` (any origin) is refused when APP_ENV=production; list the origins",
            ));
        }
        return Ok(AllowedOrigins::Any);
    }
    let mut origins = Vec::with_capacity(entries.len());
    for entry in entries {
        let bad = || {
            invalid(
                VARIABLE,
                format!(
                    "{entry:?} is not an origin like https://app.example.com \
                     (scheme://host[:port], no path or trailing slash)"
                ),
            )
        };
        let url = Url::parse(entry).map_err(|_| bad())?;
        let bare = url.path() == "/" && !entry.ends_with('/');
        if !matches!(url.scheme(), "http" | "https")
            || url.host().is_none()
            || !url.username().is_empty()
            || url.password().is_some()
            || !bare
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(bad());
        }
        let origin = url.origin().ascii_serialization();
        if !origins.contains(&origin) {
            origins.push(origin);
        }
    }
    Ok(AllowedOrigins::Listed(origins))
}

/// Checks the scheme without echoing the value, which may hold a password.
fn validate_scheme(
    variable: &'static str,
    value: &str,
    schemes: &[&str],
) -> Result<SecretString, ConfigError> {
    let url = Url::parse(value).map_err(|_| invalid(variable, "is not a URL"))?;
    if !schemes.contains(&url.scheme()) {
        return Err(invalid(
            variable,
            format!("the scheme must be one of {schemes:?}"),
        ));
    }
    Ok(SecretString::from(value.to_owned()))
}

/// Reads a PEM file of certificates now, so a wrong path stops startup instead of failing the
/// first email.
fn read_ca_file(variable: &'static str, path: &str) -> Result<String, ConfigError> {
    let pem = std::fs::read_to_string(path)
        .map_err(|error| invalid(variable, format!("cannot read {path:?}: {error}")))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(invalid(
            variable,
            format!("{path:?} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
        ));
    }
    Ok(pem)
}

/// A malformed `DATABASE_URL` is named without echoing its password.
fn validate_database_url(value: &str) -> Result<(), ConfigError> {
    let url = Url::parse(value).map_err(|_| {
        invalid(
            "DATABASE_URL",
            "is not a URL like postgres://user:password@host:5432/database",
        )
    })?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(invalid(
            "DATABASE_URL",
            "the scheme must be postgres:// or postgresql://",
        ));
    }
    PgConnectOptions::from_str(value)
        .map_err(|_| invalid("DATABASE_URL", "is not a valid PostgreSQL connection URL"))?;
    Ok(())
}

/// `TRUSTED_PROXIES`: comma-separated CIDRs (`10.0.0.0/8`) or single addresses.
fn parse_trusted_proxies(list: &str) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| {
                    invalid(
                        "TRUSTED_PROXIES",
                        format!("{item:?} is not a CIDR like 10.0.0.0/8 or an address"),
                    )
                })
        })
        .collect()
}

/// One thread per core but one, and at least one: measured on two cores, a login flood on both
/// cores put the gateway's p99 at 500 requests/s at 3 to 33 ms; on one core, at 2 to 3 ms
/// (bench/HISTORY.md).
fn default_hashing_threads() -> u32 {
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    u32::try_from(cores.saturating_sub(1).max(1)).unwrap_or(1)
}
#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn nothing_configured_gives_the_documented_defaults() {
        let settings = settings(&[]).unwrap();
        assert_eq!(settings.app_env, AppEnv::Development);
        assert_eq!(settings.listen_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.public_url.as_str(), "http://127.0.0.1:8080/");
        assert!(matches!(settings.database, DatabaseSettings::Embedded));
        assert_eq!(settings.data_dir, PathBuf::from(".data"));
        assert_eq!(settings.mail_from, "no-reply@localhost");
        assert_eq!(settings.stripe_api_base.as_str(), "https://api.stripe.com/");
        assert!(settings.redis_url.is_none() && settings.smtp_url.is_none());
        assert!(settings.smtp_ca_pem.is_none());
    }

    #[test]
    fn bad_values_name_the_variable() {
        let cases = [
            (("APP_ENV", "staging"), "APP_ENV"),
            (("DATABASE_URL", "not a url"), "DATABASE_URL"),
            (
                ("DATABASE_URL", "mysql://root@localhost/db"),
                "DATABASE_URL",
            ),
            (("LISTEN_ADDR", "everywhere"), "LISTEN_ADDR"),
            (("PUBLIC_URL", "ftp://example.com"), "PUBLIC_URL"),
            (("REDIS_URL", "http://localhost"), "REDIS_URL"),
        ];
        for ((name, value), expected) in cases {
            let error = settings(&[(name, value)]).unwrap_err();
            assert_eq!(error.variable, expected);
            assert!(error.to_string().contains(expected));
        }
    }

    #[test]
    fn a_malformed_database_url_is_reported_without_its_password() {
        let error = settings(&[("DATABASE_URL", "postgres://u:hunter2@host:notaport/db")]);
        let text = error.unwrap_err().to_string();
        assert!(text.contains("DATABASE_URL") && !text.contains("hunter2"));
    }

    #[test]
    fn the_captcha_test_code_is_refused_in_production() {
        let error =
            settings(&[("APP_ENV", "production"), ("CAPTCHA_TEST_CODE", "1234")]).unwrap_err();
        assert_eq!(error.variable, "CAPTCHA_TEST_CODE");
        assert!(settings(&[("APP_ENV", "test"), ("CAPTCHA_TEST_CODE", "1234")]).is_ok());
    }

    #[test]
    fn trusted_proxies_are_cidrs_or_addresses() {
        let parsed = settings(&[("TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.7,fd00::/8")])
            .unwrap()
            .trusted_proxies;
        let shown: Vec<String> = parsed.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.0/8", "192.168.1.7/32", "fd00::/8"]);
        let error = settings(&[("TRUSTED_PROXIES", "10.0.0.0/33")]).unwrap_err();
        assert_eq!(error.variable, "TRUSTED_PROXIES");
        assert!(settings(&[]).unwrap().trusted_proxies.is_empty());
    }

    #[test]
    fn admin_emails_are_trimmed_and_lower_cased() {
        let settings = settings(&[("ADMIN_EMAILS", " Boss@Example.com, ,ops@example.com")]);
        assert_eq!(
            settings.unwrap().admin_emails,
            ["boss@example.com", "ops@example.com"]
        );
    }

    #[test]
    fn workers_are_pinned_unless_told_not_to() {
        assert!(settings(&[]).unwrap().pin_workers);
        assert!(
            !settings(&[("HTTP_PIN_WORKERS", "false")])
                .unwrap()
                .pin_workers
        );
        let refused = settings(&[("HTTP_PIN_WORKERS", "sometimes")]).unwrap_err();
        assert!(
            refused.to_string().contains("HTTP_PIN_WORKERS"),
            "{refused}"
        );
    }

    #[test]
    fn cors_is_closed_unless_origins_are_listed() {
        let settings = settings(&[]).unwrap();
        assert_eq!(settings.cors, CorsSettings::default());
        assert_eq!(
            settings.cors.allowed_origins,
            AllowedOrigins::Listed(vec![])
        );
        assert!(!settings.cors.gateway);
    }

    #[test]
    fn cors_origins_are_kept_as_browsers_send_them() {
        let settings = settings(&[
            (
                "CORS_ALLOWED_ORIGINS",
                " https://App.Example.com, ,http://localhost:3000,https://admin.example.com:443,https://app.example.com",
            ),
            ("CORS_GATEWAY", "true"),
        ])
        .unwrap();
        assert_eq!(
            settings.cors.allowed_origins,
            AllowedOrigins::Listed(vec![
                "https://app.example.com".to_owned(),
                "http://localhost:3000".to_owned(),
                "https://admin.example.com".to_owned(),
            ])
        );
        assert!(settings.cors.gateway);
    }

    #[test]
    fn malformed_cors_origins_are_refused_naming_the_variable() {
        for value in [
            "app.example.com",
            "https://app.example.com/",
            "https://app.example.com/app",
            "https://app.example.com?x=1",
            "https://app.example.com#top",
            "https://user@app.example.com",
            "ftp://app.example.com",
            "null",
            "https://",
            "https://app.example.com:99999",
            "https://ok.example.com,bad",
            "*,https://app.example.com",
        ] {
            let error = settings(&[("CORS_ALLOWED_ORIGINS", value)]).unwrap_err();
            assert_eq!(error.variable, "CORS_ALLOWED_ORIGINS", "{value}");
            assert!(error.to_string().contains("CORS_ALLOWED_ORIGINS"));
        }
        let error = settings(&[("CORS_GATEWAY", "yes")]).unwrap_err();
        assert_eq!(error.variable, "CORS_GATEWAY");
    }

    #[test]
    fn any_origin_is_refused_in_production() {
        let error = settings(&[("APP_ENV", "production"), ("CORS_ALLOWED_ORIGINS", "*")]);
        let error = error.unwrap_err();
        assert_eq!(error.variable, "CORS_ALLOWED_ORIGINS");
        assert!(error.to_string().contains("CORS_ALLOWED_ORIGINS"));
        for env in ["development", "test"] {
            let settings = settings(&[("APP_ENV", env), ("CORS_ALLOWED_ORIGINS", " * ")]);
            assert_eq!(settings.unwrap().cors.allowed_origins, AllowedOrigins::Any);
        }
        let listed = settings(&[
            ("APP_ENV", "production"),
            ("PUBLIC_URL", "https://api.example.com"),
            ("SMTP_URL", "smtp://mail.example.com:587"),
            ("CORS_ALLOWED_ORIGINS", "https://app.example.com"),
        ]);
        assert!(listed.is_ok());
    }

    #[test]
    fn production_needs_a_public_url_and_an_smtp_server() {
        let error = settings(&[("APP_ENV", "production")]).unwrap_err();
        assert_eq!(error.variable, "PUBLIC_URL");
        let error = settings(&[
            ("APP_ENV", "production"),
            ("PUBLIC_URL", "https://api.example.com"),
        ])
        .unwrap_err();
        assert_eq!(error.variable, "SMTP_URL");
        assert!(settings(&[("APP_ENV", "development")]).is_ok());
    }

    #[test]
    fn the_smtp_ca_file_is_read_at_startup() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let error = settings(&[("SMTP_CA_FILE", missing.to_str().unwrap())]).unwrap_err();
        assert_eq!(error.variable, "SMTP_CA_FILE");
        let text = error.to_string();
        assert!(
            text.contains("SMTP_CA_FILE") && text.contains("missing.pem"),
            "{text}"
        );

        let not_pem = dir.path().join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let error = settings(&[("SMTP_CA_FILE", not_pem.to_str().unwrap())]).unwrap_err();
        assert_eq!(error.variable, "SMTP_CA_FILE");

        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, pem).unwrap();
        let settings = settings(&[("SMTP_CA_FILE", ca.to_str().unwrap())]).unwrap();
        assert_eq!(settings.smtp_ca_pem.as_deref(), Some(pem));
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let settings = settings(&[("STRIPE_SECRET_KEY", "sk_test_abcdef")]).unwrap();
        assert!(!format!("{settings:?}").contains("sk_test_abcdef"));
    }
}
