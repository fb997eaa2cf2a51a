//! The admin's view of accounts: search by email, freeze and unfreeze.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

use crate::api::{ApiError, ApiQuery, Authorized, ErrorBody, Page, PageQuery, SuccessBody, ok};
use crate::auth::AdminUser;
use crate::auth::users::{self, Role, UserStatus};
use crate::gateway::GatewayState;
use crate::ledger;
use crate::state::AppState;

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
    pub role: Role,
    pub status: UserStatus,
    /// Why a frozen account is frozen: `admin` or `dispute` (a payment disputed at the bank;
    /// a dispute won lifts it).
    pub frozen_reason: Option<String>,
    pub credits: i64,
    pub created_at: DateTime<Utc>,
}

/// Accounts, newest first, optionally filtered by email.
#[utoipa::path(get, path = "/myapi/admin/users", tag = "admin", params(UserSearch),
    security(("session" = [])), responses((status = 200, body = inline(SuccessBody<Page<UserRow>>)),
    (status = 403, description = "Not an admin.", body = ErrorBody)))]
pub async fn list(
    state: web::Data<AppState>,
    Authorized(_admin, ApiQuery(search)): Authorized<AdminUser, ApiQuery<UserSearch>>,
) -> Result<HttpResponse, ApiError> {
    let page = PageQuery {
        page: search.page,
        page_size: search.page_size,
    }
    .resolve()?;
    let (profiles, total) = users::search(&state.pool, search.email.as_deref(), page).await?;
    let ids: Vec<Uuid> = profiles.iter().map(|(profile, _)| profile.id).collect();
    let balances = ledger::balances(&state.pool, &ids).await?;
    let rows = profiles
        .into_iter()
        .map(|(profile, frozen_reason)| UserRow {
            credits: balances.get(&profile.id).copied().unwrap_or(0),
            id: profile.id,
            email: profile.email,
            role: profile.role,
            status: profile.status,
            frozen_reason,
            created_at: profile.created_at,
        })
        .collect();
    Ok(page.answer(rows, total))
}

async fn set_status(
    state: &AppState,
    gateway: &GatewayState,
    user_id: Uuid,
    status: UserStatus,
) -> Result<HttpResponse, ApiError> {
    if !users::set_status(&state.pool, user_id, status).await? {
        return Err(ApiError::not_found());
    }
    gateway
        .directory
        .set_frozen(user_id, status == UserStatus::Frozen);
    Ok(ok(()))
}

/// Freezes an account: its sessions and keys are refused (on every instance within a second).
#[utoipa::path(post, path = "/myapi/admin/users/{id}/freeze", tag = "admin",
    params(("id" = Uuid, Path, description = "The user's id.")),
    security(("session" = [])), responses((status = 200, body = inline(SuccessBody<Option<String>>)),
    (status = 400, description = "An admin's own account.", body = ErrorBody),
    (status = 403, description = "Not an admin.", body = ErrorBody),
    (status = 404, description = "No such user.", body = ErrorBody)))]
pub async fn freeze(
    state: web::Data<AppState>,
    gateway: web::Data<GatewayState>,
    Authorized(AdminUser(admin), path): Authorized<AdminUser, web::Path<Uuid>>,
) -> Result<HttpResponse, ApiError> {
    let user_id = path.into_inner();
    // A frozen admin could not unfreeze itself: the last admin would lock everyone out.
    if user_id == admin.id {
        return Err(ApiError::bad_request(
            "An admin cannot freeze their own account.",
        ));
    }
    set_status(&state, &gateway, user_id, UserStatus::Frozen).await
}

#[utoipa::path(post, path = "/myapi/admin/users/{id}/unfreeze", tag = "admin",
    params(("id" = Uuid, Path, description = "The user's id.")),
    security(("session" = [])), responses((status = 200, body = inline(SuccessBody<Option<String>>)),
    (status = 403, description = "Not an admin.", body = ErrorBody),
    (status = 404, description = "No such user.", body = ErrorBody)))]
pub async fn unfreeze(
    state: web::Data<AppState>,
    gateway: web::Data<GatewayState>,
    Authorized(_admin, path): Authorized<AdminUser, web::Path<Uuid>>,
) -> Result<HttpResponse, ApiError> {
    set_status(&state, &gateway, path.into_inner(), UserStatus::Active).await
}

#[derive(OpenApi)]
#[openapi(
    paths(list, freeze, unfreeze, super::account_data::export_own,
        super::account_data::export_user, super::account_data::delete_own,
        super::account_data::delete_user),
    tags((name = "admin", description = "Admin only: plans, providers, users, credits, orders"))
)]
pub struct AdminApi;
