//! Upstream providers: the admin's CRUD and the in-memory table the gateway reads. Secrets
//! (`auth_value`) are never returned in full nor logged.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use actix_web::{HttpResponse, web};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use thread_local::ThreadLocal;
use utoipa::ToSchema;

use super::GatewayState;
use super::upstream::Target;
use crate::api::{ApiError, ApiJson, Authorized, ErrorBody, PathAndBody, SuccessBody, ok};
use crate::auth::AdminUser;
use crate::db::is_violation_of;
use crate::state::AppState;

/// The most credits one call may cost: far above any real price, and far below what the
/// meter's arithmetic on it (blocks of ten calls and more) could overflow.
const MAX_COST: i64 = 1_000_000;

/// A provider as the gateway uses it. Its credential is a secret type: `Debug` (and so any
/// log of a provider) shows it redacted.
#[derive(Clone, Debug)]
pub struct Provider {
    pub slug: String,
    pub base_url: url::Url,
    pub auth_header: Option<String>,
    pub auth_value: Option<SecretString>,
    pub cost: i64,
    pub timeout_ms: i32,
    pub body: BodyLimits,
    pub enabled: bool,
    /// Where and how calls are sent, prepared once per load instead of on every call.
    pub target: Target,
}

/// How long and how large a provider's response body may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct BodyLimits {
    /// The longest wait for the next chunk of the body.
    pub body_idle_ms: i32,
    /// The longest a call may take, from the request to the body's last byte.
    pub body_deadline_ms: i32,
    /// The largest body passed on.
    pub max_response_bytes: i64,
}

impl Default for BodyLimits {
    /// The columns' defaults.
    fn default() -> BodyLimits {
        BodyLimits {
            body_idle_ms: 30_000,
            body_deadline_ms: 300_000,
            max_response_bytes: 100 * 1024 * 1024,
        }
    }
}

/// A provider as the admin sees it: the secret masked.
#[derive(Serialize, ToSchema)]
pub struct ProviderView {
    pub slug: String,
    pub base_url: String,
    pub auth_header: Option<String>,
    /// The last four characters of the secret, behind asterisks.
    pub auth_value: Option<String>,
    pub cost: i64,
    pub timeout_ms: i32,
    #[serde(flatten)]
    pub body: BodyLimits,
    pub enabled: bool,
}

impl From<&Provider> for ProviderView {
    fn from(provider: &Provider) -> ProviderView {
        ProviderView {
            slug: provider.slug.clone(),
            base_url: provider.base_url.to_string(),
            auth_header: provider.auth_header.clone(),
            auth_value: provider
                .auth_value
                .as_ref()
                .map(|value| mask(value.expose_secret())),
            cost: provider.cost,
            timeout_ms: provider.timeout_ms,
            body: provider.body,
            enabled: provider.enabled,
        }
    }
}

fn mask(secret: &str) -> String {
    let tail: String = secret
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if secret.chars().count() <= 8 {
        String::from("****")
    } else {
        format!("****{tail}")
    }
}

/// The providers, reloaded from PostgreSQL every second and at once after an admin change.
#[derive(Default)]
pub struct ProviderTable {
    providers: RwLock<HashMap<String, Provider>>,
    /// Counts the reloads: a worker's copy of an older one is taken again.
    version: AtomicU64,
    /// Each worker thread's own copy: a call's look-up then takes no lock and counts no
    /// reference that another worker's calls share (see `near_keys.rs`).
    near: ThreadLocal<RefCell<NearProviders>>,
}

#[derive(Default)]
struct NearProviders {
    version: Option<u64>,
    providers: HashMap<String, Arc<Provider>>,
}

impl ProviderTable {
    pub fn get(&self, slug: &str) -> Option<Arc<Provider>> {
        let version = self.version.load(Ordering::Acquire);
        let mut near = self.near.get_or_default().borrow_mut();
        if near.version != Some(version) {
            // Copies, not shared `Arc`s: each worker counts references to its own.
            near.providers = self
                .providers
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(slug, provider)| (slug.clone(), Arc::new(provider.clone())))
                .collect();
            near.version = Some(version);
        }
        near.providers.get(slug).cloned()
    }

    pub async fn reload(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let loaded: HashMap<String, Provider> = load_all(pool)
            .await?
            .into_iter()
            .map(|p| (p.slug.clone(), p))
            .collect();
        *self.providers.write().unwrap_or_else(|p| p.into_inner()) = loaded;
        self.version.fetch_add(1, Ordering::Release);
        Ok(())
    }
}

async fn load_all(pool: &PgPool) -> Result<Vec<Provider>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT slug, base_url, auth_header, auth_value, cost, timeout_ms, enabled,
                  body_idle_ms, body_deadline_ms, max_response_bytes
           FROM providers ORDER BY slug"#
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let base_url = url::Url::parse(&row.base_url).ok()?;
            let auth_value = row.auth_value.map(SecretString::from);
            let target = Target::of(
                &base_url,
                row.auth_header.as_deref(),
                auth_value.as_ref(),
                row.timeout_ms,
            )?;
            Some(Provider {
                base_url,
                target,
                slug: row.slug,
                auth_header: row.auth_header,
                auth_value,
                cost: row.cost,
                timeout_ms: row.timeout_ms,
                body: BodyLimits {
                    body_idle_ms: row.body_idle_ms,
                    body_deadline_ms: row.body_deadline_ms,
                    max_response_bytes: row.max_response_bytes,
                },
                enabled: row.enabled,
            })
        })
        .collect())
}

#[derive(Deserialize, ToSchema)]
pub struct ProviderInput {
    pub slug: String,
    pub base_url: String,
    pub auth_header: Option<String>,
    pub auth_value: Option<String>,
    /// Credits per call.
    pub cost: i64,
    /// The longest wait for the response's headers.
    pub timeout_ms: i32,
    /// 1 to 600000; 30000 by default (an update without it keeps the stored value).
    pub body_idle_ms: Option<i32>,
    /// 1 to 3600000; 300000 by default (an update without it keeps the stored value).
    pub body_deadline_ms: Option<i32>,
    /// 1 to 17179869184 (16 GiB); 104857600 (100 MiB) by default (an update without it keeps
    /// the stored value).
    pub max_response_bytes: Option<i64>,
    pub enabled: Option<bool>,
}

struct ValidProvider {
    base_url: String,
    auth_header: Option<String>,
}

impl ProviderInput {
    fn validate(&self) -> Result<ValidProvider, ApiError> {
        let slug_ok = !self.slug.is_empty()
            && self.slug.len() <= 63
            && self
                .slug
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
            && self
                .slug
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric());
        if !slug_ok {
            return Err(ApiError::bad_request(
                "field `slug`: lower-case letters, digits, - and _.",
            ));
        }
        let url = url::Url::parse(self.base_url.trim())
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
            .filter(|url| url.query().is_none() && url.fragment().is_none())
            .ok_or_else(|| {
                ApiError::bad_request("field `base_url`: an http(s) URL without query.")
            })?;
        let auth_header = self
            .auth_header
            .as_deref()
            .map(str::trim)
            .filter(|h| !h.is_empty());
        if let Some(header) = auth_header
            && actix_web::http::header::HeaderName::from_bytes(header.as_bytes()).is_err()
        {
            return Err(ApiError::bad_request(
                "field `auth_header`: not a header name.",
            ));
        }
        if self
            .auth_value
            .as_deref()
            .is_some_and(|value| actix_web::http::header::HeaderValue::from_str(value).is_err())
        {
            return Err(ApiError::bad_request(
                "field `auth_value`: not a header value.",
            ));
        }
        if !(0..=MAX_COST).contains(&self.cost) {
            return Err(ApiError::bad_request("field `cost`: 0 to 1000000."));
        }
        if !(1..=600_000).contains(&self.timeout_ms) {
            return Err(ApiError::bad_request("field `timeout_ms`: 1 to 600000."));
        }
        if self
            .body_idle_ms
            .is_some_and(|ms| !(1..=600_000).contains(&ms))
        {
            return Err(ApiError::bad_request("field `body_idle_ms`: 1 to 600000."));
        }
        if self
            .body_deadline_ms
            .is_some_and(|ms| !(1..=3_600_000).contains(&ms))
        {
            return Err(ApiError::bad_request(
                "field `body_deadline_ms`: 1 to 3600000.",
            ));
        }
        if self
            .max_response_bytes
            .is_some_and(|bytes| !(1..=16 * 1024 * 1024 * 1024).contains(&bytes))
        {
            return Err(ApiError::bad_request(
                "field `max_response_bytes`: 1 to 17179869184.",
            ));
        }
        Ok(ValidProvider {
            base_url: url.to_string(),
            auth_header: auth_header.map(str::to_owned),
        })
    }
}

#[utoipa::path(get, path = "/myapi/admin/providers", tag = "admin", security(("session" = [])),
    responses((status = 200, body = inline(SuccessBody<Vec<ProviderView>>)),
    (status = 403, description = "Not an admin.", body = ErrorBody)))]
pub async fn list(
    context: web::Data<AppState>,
    _admin: AdminUser,
) -> Result<HttpResponse, ApiError> {
    let providers = load_all(&context.pool).await?;
    Ok(ok(providers
        .iter()
        .map(ProviderView::from)
        .collect::<Vec<_>>()))
}

#[utoipa::path(post, path = "/myapi/admin/providers", tag = "admin", request_body = ProviderInput,
    security(("session" = [])), responses((status = 200, body = inline(SuccessBody<ProviderView>)),
    (status = 400, description = "A field is invalid or the slug is taken.", body = ErrorBody),
    (status = 403, description = "Not an admin.", body = ErrorBody)))]
pub async fn create(
    context: web::Data<AppState>,
    gateway: web::Data<GatewayState>,
    Authorized(_admin, ApiJson(input)): Authorized<AdminUser, ApiJson<ProviderInput>>,
) -> Result<HttpResponse, ApiError> {
    let valid = input.validate()?;
    let defaults = BodyLimits::default();
    let inserted = sqlx::query!(
        r#"INSERT INTO providers (slug, base_url, auth_header, auth_value, cost, timeout_ms, enabled,
                                 body_idle_ms, body_deadline_ms, max_response_bytes)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"#,
        input.slug,
        valid.base_url,
        valid.auth_header,
        input.auth_value,
        input.cost,
        input.timeout_ms,
        input.enabled.unwrap_or(true),
        input.body_idle_ms.unwrap_or(defaults.body_idle_ms),
        input
            .body_deadline_ms
            .unwrap_or(defaults.body_deadline_ms),
        input
            .max_response_bytes
            .unwrap_or(defaults.max_response_bytes)
    )
    .execute(&context.pool)
    .await;
    match inserted {
        Err(error) if is_violation_of(&error, "providers_pkey") => {
            return Err(ApiError::bad_request(
                "field `slug`: a provider with this slug exists.",
            ));
        }
        other => other?,
    };
    answer(&context, &gateway, &input.slug).await
}

#[utoipa::path(put, path = "/myapi/admin/providers/{slug}", tag = "admin",
    params(("slug" = String, Path, description = "The provider's slug.")),
    request_body = ProviderInput, security(("session" = [])),
    responses((status = 200, body = inline(SuccessBody<ProviderView>)),
    (status = 400, description = "A field is invalid.", body = ErrorBody),
    (status = 404, description = "No such provider.", body = ErrorBody)))]
pub async fn update(
    context: web::Data<AppState>,
    gateway: web::Data<GatewayState>,
    Authorized(_admin, (path, ApiJson(input))): Authorized<
        AdminUser,
        PathAndBody<String, ProviderInput>,
    >,
) -> Result<HttpResponse, ApiError> {
    let valid = input.validate()?;
    if input.slug != *path {
        return Err(ApiError::bad_request("field `slug`: must match the path."));
    }
    // An absent auth_value keeps the stored secret, which the admin never sees in full.
    let updated = sqlx::query!(
        r#"UPDATE providers SET base_url = $2, auth_header = $3,
                  auth_value = COALESCE($4, auth_value), cost = $5, timeout_ms = $6,
                  enabled = $7, body_idle_ms = COALESCE($8, body_idle_ms),
                  body_deadline_ms = COALESCE($9, body_deadline_ms),
                  max_response_bytes = COALESCE($10, max_response_bytes)
           WHERE slug = $1"#,
        input.slug,
        valid.base_url,
        valid.auth_header,
        input.auth_value,
        input.cost,
        input.timeout_ms,
        input.enabled.unwrap_or(true),
        input.body_idle_ms,
        input.body_deadline_ms,
        input.max_response_bytes
    )
    .execute(&context.pool)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(ApiError::not_found());
    }
    answer(&context, &gateway, &input.slug).await
}

#[utoipa::path(delete, path = "/myapi/admin/providers/{slug}", tag = "admin",
    params(("slug" = String, Path, description = "The provider's slug.")),
    security(("session" = [])), responses((status = 200, body = inline(SuccessBody<Option<String>>)),
    (status = 404, description = "No such provider.", body = ErrorBody)))]
pub async fn delete(
    context: web::Data<AppState>,
    gateway: web::Data<GatewayState>,
    Authorized(_admin, path): Authorized<AdminUser, web::Path<String>>,
) -> Result<HttpResponse, ApiError> {
    let deleted = sqlx::query!("DELETE FROM providers WHERE slug = $1", path.as_str())
        .execute(&context.pool)
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(ApiError::not_found());
    }
    gateway.providers.reload(&context.pool).await?;
    Ok(ok(()))
}

async fn answer(
    context: &AppState,
    gateway: &GatewayState,
    slug: &str,
) -> Result<HttpResponse, ApiError> {
    gateway.providers.reload(&context.pool).await?;
    let provider = gateway
        .providers
        .get(slug)
        .ok_or_else(ApiError::not_found)?;
    Ok(ok(ProviderView::from(provider.as_ref())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_providers_debug_and_view_never_show_its_credential() {
        let base_url = url::Url::parse("http://127.0.0.1:1/").unwrap();
        let auth_value = SecretString::from("provider-secret-value");
        let provider = Provider {
            target: Target::of(&base_url, Some("X-Secret"), Some(&auth_value), 1000).unwrap(),
            slug: String::from("echo"),
            base_url,
            auth_header: Some(String::from("X-Secret")),
            auth_value: Some(auth_value),
            cost: 1,
            timeout_ms: 1000,
            body: BodyLimits::default(),
            enabled: true,
        };
        assert!(!format!("{provider:?}").contains("provider-secret-value"));
        let view = serde_json::to_string(&ProviderView::from(&provider)).unwrap();
        assert!(!view.contains("provider-secret-value"), "{view}");
    }
}
