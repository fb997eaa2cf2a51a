//! The admin's view of accounts: search by email, freeze and unfreeze.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

use super::AdminUser;
use crate::api::{ApiError, ApiQuery, ErrorBody, Page, PageQuery, SuccessBody, ok, ok_page};
use crate::startup::AppContext;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserSearch {
    /// Part of the address, case-insensitive.
    pub email: Option<String>,
    pub page: Option<u32>,
    pub page_size: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub role: String,
    pub status: String,
    pub credits: i64,
    pub created_at: DateTime<Utc>,
}

/// Accounts, newest first, optionally filtered by email.
#[utoipa::path(get, path = "/myapi/admin/users", tag = "admin", params(UserSearch),
    security(("session" = [])), responses((status = 200, body = inline(SuccessBody<Page<UserRow>>)),
    (status = 403, description = "Not an admin.", body = ErrorBody)))]
pub async fn list(
    context: web::Data<AppContext>,
    _admin: AdminUser,
    ApiQuery(search): ApiQuery<UserSearch>,
) -> Result<HttpResponse, ApiError> {
    let (page, size) = PageQuery {
        page: search.page,
        page_size: search.page_size,
    }
    .resolve()?;
    // The search text is matched literally: LIKE's wildcards in it are escaped.
    let pattern = search.email.as_deref().map(|email| {
        let escaped = email
            .trim()
            .to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        format!("%{escaped}%")
    });
    let rows = sqlx::query!(
        r#"SELECT u.id, u.email, u.role, u.status, u.created_at,
                  COALESCE(a.balance, 0) AS "credits!", count(*) OVER () AS "total!"
           FROM users u LEFT JOIN credit_accounts a ON a.user_id = u.id
           WHERE $1::text IS NULL OR lower(u.email) LIKE $1
           ORDER BY u.created_at DESC, u.id LIMIT $2 OFFSET $3"#,
        pattern,
        i64::from(size),
        i64::from((page - 1) * size)
    )
    .fetch_all(&context.pool)
    .await?;
    let total = rows.first().map_or(0, |row| row.total);
    let users = rows
        .into_iter()
        .map(|row| UserRow {
            id: row.id,
            email: row.email,
            role: row.role,
            status: row.status,
            credits: row.credits,
            created_at: row.created_at,
        })
        .collect();
    Ok(ok_page(users, total, page, size))
}

async fn set_status(
    context: &AppContext,
    user_id: Uuid,
    status: &str,
) -> Result<HttpResponse, ApiError> {
    let updated = sqlx::query!(
        "UPDATE users SET status = $2 WHERE id = $1",
        user_id,
        status
    )
    .execute(&context.pool)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(ApiError::not_found());
    }
    context
        .gateway
        .directory
        .set_frozen(user_id, status == "frozen");
    Ok(ok(()))
}

/// Freezes an account: its sessions and keys are refused (on every instance within a second).
#[utoipa::path(post, path = "/myapi/admin/users/{id}/freeze", tag = "admin",
    security(("session" = [])), responses((status = 200, body = inline(SuccessBody<Option<String>>)),
    (status = 403, description = "Not an admin.", body = ErrorBody),
    (status = 404, description = "No such user.", body = ErrorBody)))]
pub async fn freeze(
    context: web::Data<AppContext>,
    _admin: AdminUser,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    set_status(&context, path.into_inner(), "frozen").await
}

#[utoipa::path(post, path = "/myapi/admin/users/{id}/unfreeze", tag = "admin",
    security(("session" = [])), responses((status = 200, body = inline(SuccessBody<Option<String>>)),
    (status = 403, description = "Not an admin.", body = ErrorBody),
    (status = 404, description = "No such user.", body = ErrorBody)))]
pub async fn unfreeze(
    context: web::Data<AppContext>,
    _admin: AdminUser,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    set_status(&context, path.into_inner(), "active").await
}

#[derive(OpenApi)]
#[openapi(
    paths(list, freeze, unfreeze),
    tags((name = "admin", description = "Admin only: plans, providers, users, credits, orders"))
)]
pub struct AdminApi;
