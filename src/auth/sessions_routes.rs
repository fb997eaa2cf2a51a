//! The user's own sessions: listed with where and when they were opened and last used, ended one
//! by one or all but the current one.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::session::{self, ActiveUser};
use crate::api::{ApiError, Authorized, ErrorBody, SuccessBody, ok};
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct SessionView {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    /// Written at most every five minutes.
    pub last_seen_at: Option<DateTime<Utc>>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The session this request was made with.
    pub current: bool,
}

/// The caller's live sessions, the newest first (an account has a handful: no pages).
#[utoipa::path(get, path = "/myapi/auth/sessions", tag = "auth", security(("session" = [])),
    responses((status = 200, body = inline(SuccessBody<crate::api::Page<SessionView>>)),
    (status = 401, description = "40101 no valid session.", body = ErrorBody)))]
pub async fn list(
    context: web::Data<AppState>,
    ActiveUser(current): ActiveUser,
) -> Result<HttpResponse, ApiError> {
    let rows = sqlx::query!(
        r#"SELECT id, created_at, last_seen_at, ip, user_agent FROM sessions
           WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2
           ORDER BY created_at DESC, id"#,
        current.user.id,
        context.clock.now()
    )
    .fetch_all(&context.pool)
    .await?;
    let items: Vec<SessionView> = rows
        .into_iter()
        .map(|row| SessionView {
            current: row.id == current.session_id,
            id: row.id,
            created_at: row.created_at,
            last_seen_at: row.last_seen_at,
            ip: row.ip,
            user_agent: row.user_agent,
        })
        .collect();
    let total = i64::try_from(items.len()).unwrap_or(i64::MAX);
    let page_size = u32::try_from(items.len()).unwrap_or(u32::MAX).max(1);
    Ok(ok(crate::api::Page {
        items,
        total,
        page: 1,
        page_size,
    }))
}

/// Ends one of the caller's sessions (the current one too: that is a logout).
#[utoipa::path(delete, path = "/myapi/auth/sessions/{id}", tag = "auth",
    params(("id" = Uuid, Path, description = "The session's id.")),
    security(("session" = [])), responses(
    (status = 200, body = inline(SuccessBody<Option<String>>)),
    (status = 401, description = "40101 no valid session.", body = ErrorBody),
    (status = 404, description = "No such live session of the caller's.", body = ErrorBody)))]
pub async fn revoke(
    context: web::Data<AppState>,
    Authorized(ActiveUser(current), path): Authorized<ActiveUser, web::Path<Uuid>>,
) -> Result<HttpResponse, ApiError> {
    let ended = sqlx::query!(
        r#"UPDATE sessions SET revoked_at = $3
           WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL"#,
        path.into_inner(),
        current.user.id,
        context.clock.now()
    )
    .execute(&context.pool)
    .await?;
    if ended.rows_affected() == 0 {
        return Err(ApiError::not_found());
    }
    Ok(ok(()))
}

/// Ends every session of the caller but the one this request was made with.
#[utoipa::path(post, path = "/myapi/auth/sessions/revoke-others", tag = "auth",
    security(("session" = [])), responses(
    (status = 200, body = inline(SuccessBody<Option<String>>)),
    (status = 401, description = "40101 no valid session.", body = ErrorBody)))]
pub async fn revoke_others(
    context: web::Data<AppState>,
    ActiveUser(current): ActiveUser,
) -> Result<HttpResponse, ApiError> {
    let mut connection = context.pool.acquire().await?;
    session::revoke_all_of_user(
        &mut connection,
        current.user.id,
        Some(current.session_id),
        context.clock.now(),
    )
    .await?;
    Ok(ok(()))
}
