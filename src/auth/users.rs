//! Accounts: the profile shown to clients and the queries that read and write users.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::AuthError;
use crate::api::PageRequest;
use crate::db::is_violation_of;

/// What an account may do; stored as text, and an unknown stored value is an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

/// Whether an account may log in and call the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum UserStatus {
    Active,
    Frozen,
}

/// `user` of the contract.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Profile {
    pub id: Uuid,
    pub email: String,
    pub role: Role,
    pub status: UserStatus,
    pub created_at: DateTime<Utc>,
    /// The language of the emails: `en` or `zh`.
    pub lang: String,
    /// Credits under which the user is emailed once (null: never).
    pub low_balance_alert: Option<i64>,
}

impl Profile {
    pub fn is_frozen(&self) -> bool {
        self.status == UserStatus::Frozen
    }
}

/// A user with the password hash, for verifying logins.
pub struct Credentials {
    pub profile: Profile,
    pub password_hash: String,
}

pub async fn find_by_email(pool: &PgPool, email: &str) -> Result<Option<Credentials>, AuthError> {
    let row = sqlx::query!(
        r#"SELECT id, email, role AS "role: Role", status AS "status: UserStatus", created_at,
                  lang, low_balance_alert, password_hash
           FROM users WHERE lower(email) = lower($1)"#,
        email
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|row| Credentials {
        profile: Profile {
            id: row.id,
            email: row.email,
            role: row.role,
            status: row.status,
            created_at: row.created_at,
            lang: row.lang,
            low_balance_alert: row.low_balance_alert,
        },
        password_hash: row.password_hash,
    }))
}

/// An account's profile by id.
pub async fn find(pool: &PgPool, user_id: Uuid) -> Result<Option<Profile>, sqlx::Error> {
    sqlx::query_as!(
        Profile,
        r#"SELECT id, email, role AS "role: Role", status AS "status: UserStatus", created_at,
                  lang, low_balance_alert
           FROM users WHERE id = $1"#,
        user_id
    )
    .fetch_optional(pool)
    .await
}

pub async fn email_taken(pool: &PgPool, email: &str) -> Result<bool, AuthError> {
    let taken = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM users WHERE lower(email) = lower($1)) AS "taken!""#,
        email
    )
    .fetch_one(pool)
    .await?;
    Ok(taken)
}

/// Inserts a user; a taken address (the `users_email_key` index) is `EmailExists`.
pub async fn insert(
    connection: &mut PgConnection,
    email: &str,
    password_hash: &str,
    role: Role,
) -> Result<Profile, AuthError> {
    let row = sqlx::query_as!(
        Profile,
        r#"INSERT INTO users (email, password_hash, role) VALUES ($1, $2, $3)
           RETURNING id, email, role AS "role: Role", status AS "status: UserStatus",
                     created_at, lang, low_balance_alert"#,
        email,
        password_hash,
        role as Role
    )
    .fetch_one(connection)
    .await;
    match row {
        Ok(profile) => Ok(profile),
        Err(error) if is_violation_of(&error, "users_email_key") => Err(AuthError::EmailExists),
        Err(error) => Err(error.into()),
    }
}

pub async fn set_password_hash(
    connection: &mut PgConnection,
    user_id: Uuid,
    password_hash: &str,
) -> Result<(), AuthError> {
    sqlx::query!(
        "UPDATE users SET password_hash = $2 WHERE id = $1",
        user_id,
        password_hash
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Accounts whose address contains `needle` (case-insensitive, matched literally: LIKE's
/// wildcards in it are escaped), newest first; and how many there are in all.
pub async fn search(
    pool: &PgPool,
    needle: Option<&str>,
    page: PageRequest,
) -> Result<(Vec<(Profile, Option<String>)>, i64), sqlx::Error> {
    let pattern = needle.map(|needle| {
        let escaped = needle
            .trim()
            .to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        format!("%{escaped}%")
    });
    let rows = sqlx::query!(
        r#"SELECT id, email, role AS "role: Role", status AS "status: UserStatus", created_at,
                  lang, low_balance_alert, frozen_reason
           FROM users WHERE $1::text IS NULL OR lower(email) LIKE $1
           ORDER BY created_at DESC, id LIMIT $2 OFFSET $3"#,
        pattern,
        page.limit(),
        page.offset()
    )
    .fetch_all(pool)
    .await?;
    let profiles = rows
        .into_iter()
        .map(|row| {
            let profile = Profile {
                id: row.id,
                email: row.email,
                role: row.role,
                status: row.status,
                created_at: row.created_at,
                lang: row.lang,
                low_balance_alert: row.low_balance_alert,
            };
            (profile, row.frozen_reason)
        })
        .collect();
    let total = sqlx::query_scalar!(
        r#"SELECT count(*) AS "total!" FROM users WHERE $1::text IS NULL OR lower(email) LIKE $1"#,
        pattern
    )
    .fetch_one(pool)
    .await?;
    Ok((profiles, total))
}

pub async fn exists(pool: &PgPool, user_id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM users WHERE id = $1) AS "exists!""#,
        user_id
    )
    .fetch_one(pool)
    .await
}

/// Freezes an active account because a payment of it is disputed (an admin's freeze stays the
/// admin's).
pub async fn freeze_for_dispute(
    connection: &mut PgConnection,
    user_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE users SET status = 'frozen', frozen_reason = 'dispute'
           WHERE id = $1 AND status = 'active'"#,
        user_id
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Lifts a freeze that a dispute made; an admin's freeze stays.
pub async fn lift_dispute_freeze(
    connection: &mut PgConnection,
    user_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE users SET status = 'active', frozen_reason = NULL
           WHERE id = $1 AND frozen_reason = 'dispute'"#,
        user_id
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Sets an account's status (an admin's decision); false when there is no such account.
pub async fn set_status(
    pool: &PgPool,
    user_id: Uuid,
    status: UserStatus,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query!(
        r#"UPDATE users SET status = $2,
                  frozen_reason = CASE WHEN $2 = 'frozen' THEN 'admin' END
           WHERE id = $1"#,
        user_id,
        status as UserStatus
    )
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Sets the role of the account with `email`; false when there is none.
pub async fn set_role(pool: &PgPool, email: &str, role: Role) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query!(
        "UPDATE users SET role = $2 WHERE lower(email) = lower($1)",
        email,
        role as Role
    )
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Which of `user_ids` are active accounts.
pub async fn active_among(pool: &PgPool, user_ids: &[Uuid]) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT id FROM users WHERE id = ANY($1) AND status = 'active'",
        user_ids
    )
    .fetch_all(pool)
    .await
}

pub async fn email_of(connection: &mut PgConnection, user_id: Uuid) -> Result<String, sqlx::Error> {
    sqlx::query_scalar!("SELECT email FROM users WHERE id = $1", user_id)
        .fetch_one(connection)
        .await
}

/// Locks the user's row for the rest of the transaction: what makes a count and an insert of
/// the user's things (keys, orders) one step.
pub async fn lock(connection: &mut PgConnection, user_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!("SELECT id FROM users WHERE id = $1 FOR UPDATE", user_id)
        .fetch_one(connection)
        .await?;
    Ok(())
}

/// An account whose credits fell below its alert threshold.
pub struct LowBalance {
    pub email: String,
    pub lang: String,
    pub balance: i64,
    pub threshold: i64,
}

/// Marks the active accounts now below their threshold as alerted, and returns them; rows that
/// another instance is taking are skipped.
pub async fn take_low_balance_crossings(
    connection: &mut PgConnection,
) -> Result<Vec<LowBalance>, sqlx::Error> {
    sqlx::query_as!(
        LowBalance,
        r#"WITH crossed AS (
               SELECT u.id, COALESCE(c.balance, 0) AS balance
               FROM users u LEFT JOIN credit_accounts c ON c.user_id = u.id
               WHERE u.low_balance_alert IS NOT NULL AND NOT u.low_balance_notified
                 AND u.status = 'active' AND COALESCE(c.balance, 0) < u.low_balance_alert
               FOR UPDATE OF u SKIP LOCKED)
           UPDATE users u SET low_balance_notified = true FROM crossed
           WHERE u.id = crossed.id
           RETURNING u.email, u.lang, crossed.balance AS "balance!",
                     u.low_balance_alert AS "threshold!""#
    )
    .fetch_all(connection)
    .await
}

/// Re-arms the alert of the accounts back at or above their threshold.
pub async fn rearm_low_balance_alerts(connection: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE users u SET low_balance_notified = false FROM credit_accounts c
           WHERE c.user_id = u.id AND u.low_balance_notified
             AND (u.low_balance_alert IS NULL OR c.balance >= u.low_balance_alert)"#
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// The address and language of an account, for the emails about it.
pub async fn contact(
    connection: &mut PgConnection,
    user_id: Uuid,
) -> Result<Option<(String, String)>, sqlx::Error> {
    let row = sqlx::query!("SELECT email, lang FROM users WHERE id = $1", user_id)
        .fetch_optional(connection)
        .await?;
    Ok(row.map(|row| (row.email, row.lang)))
}

/// What `PATCH /myapi/user/profile` changes; None leaves a field as it is.
pub struct Preferences {
    pub lang: Option<String>,
    /// Some(None) clears the alert.
    pub low_balance_alert: Option<Option<i64>>,
}

/// Sets the account's preferences; a new threshold re-arms the alert.
pub async fn set_preferences(
    pool: &PgPool,
    user_id: Uuid,
    preferences: Preferences,
) -> Result<(), sqlx::Error> {
    let (set_alert, alert) = match preferences.low_balance_alert {
        Some(alert) => (true, alert),
        None => (false, None),
    };
    sqlx::query!(
        r#"UPDATE users SET lang = COALESCE($2, lang),
                  low_balance_alert = CASE WHEN $3 THEN $4 ELSE low_balance_alert END,
                  low_balance_notified = CASE WHEN $3 THEN false ELSE low_balance_notified END
           WHERE id = $1"#,
        user_id,
        preferences.lang,
        set_alert,
        alert
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Erases an account's personal data and leaves an anonymous tombstone that orders and the
/// ledger keep pointing at: the address becomes `deleted-<id>@deleted.invalid`, the password
/// unusable, the account frozen for good; its sessions end without address or agent, its
/// devices and pending email codes go. Returns the old address, or None when the account does
/// not exist or was erased before.
pub async fn erase(
    connection: &mut PgConnection,
    user_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<String>, sqlx::Error> {
    let old = sqlx::query_scalar!(
        "SELECT email FROM users WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
        user_id
    )
    .fetch_optional(&mut *connection)
    .await?;
    let Some(old) = old else {
        return Ok(None);
    };
    sqlx::query!(
        r#"UPDATE users SET email = 'deleted-' || id || '@deleted.invalid', password_hash = '!',
                  status = 'frozen', frozen_reason = 'deleted', deleted_at = $2,
                  low_balance_alert = NULL, low_balance_notified = false
           WHERE id = $1"#,
        user_id,
        now
    )
    .execute(&mut *connection)
    .await?;
    sqlx::query!(
        r#"UPDATE sessions SET revoked_at = COALESCE(revoked_at, $2), ip = NULL, user_agent = NULL
           WHERE user_id = $1"#,
        user_id,
        now
    )
    .execute(&mut *connection)
    .await?;
    sqlx::query!("DELETE FROM known_devices WHERE user_id = $1", user_id)
        .execute(&mut *connection)
        .await?;
    sqlx::query!("DELETE FROM email_codes WHERE email = $1", old)
        .execute(&mut *connection)
        .await?;
    Ok(Some(old))
}
