//! Accounts: the profile shown to clients and the queries that read and write users.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::AuthError;

/// `user` of the contract.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Profile {
    pub id: Uuid,
    pub email: String,
    /// `user` or `admin`.
    pub role: String,
    /// `active` or `frozen`.
    pub status: String,
    pub created_at: DateTime<Utc>,
}

impl Profile {
    pub fn is_frozen(&self) -> bool {
        self.status == "frozen"
    }
}

/// A user with the password hash, for verifying logins.
pub struct Credentials {
    pub profile: Profile,
    pub password_hash: String,
}

pub async fn find_by_email(pool: &PgPool, email: &str) -> Result<Option<Credentials>, AuthError> {
    let row = sqlx::query!(
        r#"SELECT id, email, role, status, created_at, password_hash
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
        },
        password_hash: row.password_hash,
    }))
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
    role: &str,
) -> Result<Profile, AuthError> {
    let row = sqlx::query_as!(
        Profile,
        r#"INSERT INTO users (email, password_hash, role) VALUES ($1, $2, $3)
           RETURNING id, email, role, status, created_at"#,
        email,
        password_hash,
        role
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

/// Whether `error` is a violation of the named constraint or unique index.
pub fn is_violation_of(error: &sqlx::Error, constraint: &str) -> bool {
    error.as_database_error().and_then(|e| e.constraint()) == Some(constraint)
}
