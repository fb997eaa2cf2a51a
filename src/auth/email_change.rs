//! Changing the account's address: a code sent to the new address proves it, then the address
//! changes, the old address is told, and every other session ends.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use utoipa::ToSchema;

use super::error::AuthError;
use super::input::Email;
use super::register::{self, CodeSent};
use super::routes::{EmailWithCaptcha, address_for_a_send};
use super::session::{self, ActiveUser};
use super::users::{self, Profile};
use crate::api::{ApiError, ApiJson, Authorized, ErrorBody, Lang, SuccessBody, ok};
use crate::db::is_violation_of;
use crate::mail::{self, outbox};
use crate::state::AppState;
use crate::telemetry::mask_email;

#[derive(Deserialize, ToSchema)]
pub struct NewEmailCodeRequest {
    #[schema(format = Email)]
    pub new_email: String,
    pub captcha_id: Option<String>,
    pub captcha: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct NewEmailRequest {
    #[schema(format = Email)]
    pub new_email: String,
    pub email_code: String,
}

/// Emails a code to the address the caller wants to move to.
#[utoipa::path(post, path = "/myapi/user/email/code", tag = "auth",
    request_body = NewEmailCodeRequest, security(("session" = [])), responses(
    (status = 200, body = inline(SuccessBody<CodeSent>)),
    (status = 400, description = "40002 captcha required, 40001 invalid captcha, 40003 the \
        address has an account, 40008 cooldown, or a malformed field.", body = ErrorBody),
    (status = 401, description = "40101 no valid session.", body = ErrorBody),
    (status = 429, description = "Too many emails requested from this IP.", body = ErrorBody),
    (status = 500, description = "50011 the email could not be sent.", body = ErrorBody)))]
pub async fn send_code(
    context: web::Data<AppState>,
    req: HttpRequest,
    Authorized(ActiveUser(session), ApiJson(body)): Authorized<
        ActiveUser,
        ApiJson<NewEmailCodeRequest>,
    >,
) -> Result<HttpResponse, ApiError> {
    let ask = EmailWithCaptcha {
        email: body.new_email,
        captcha_id: body.captcha_id,
        captcha: body.captcha,
    };
    let email = address_for_a_send(&context, &req, &ask).await?;
    let lang = Lang::parse(&session.user.lang).unwrap_or_default();
    Ok(ok(
        register::send_code(&context, email.as_str(), lang).await?
    ))
}

/// Moves the account to the new address with the code sent there; the old address is told and
/// every other session ends. Answers the profile.
#[utoipa::path(post, path = "/myapi/user/email", tag = "auth", request_body = NewEmailRequest,
    security(("session" = [])), responses(
    (status = 200, body = inline(SuccessBody<Profile>)),
    (status = 400, description = "40003 the address has an account, 40004 a wrong or expired \
        code, or a malformed field.", body = ErrorBody),
    (status = 401, description = "40101 no valid session.", body = ErrorBody),
    (status = 429, description = "Too many wrong codes for this address today.", body = ErrorBody)))]
pub async fn change(
    context: web::Data<AppState>,
    Authorized(ActiveUser(session), ApiJson(body)): Authorized<
        ActiveUser,
        ApiJson<NewEmailRequest>,
    >,
) -> Result<HttpResponse, ApiError> {
    let new_email = Email::parse(&body.new_email)?;
    let new_email = new_email.as_str();
    let user = &session.user;
    let now = context.clock.now();
    let digest = register::check_code(&context, new_email, &body.email_code, now).await?;
    let mut transaction = context.pool.begin().await?;
    register::consume_code(&mut transaction, new_email, &digest).await?;
    let changed = sqlx::query!(
        "UPDATE users SET email = $2 WHERE id = $1",
        user.id,
        new_email
    )
    .execute(&mut *transaction)
    .await;
    match changed {
        Ok(_) => {}
        Err(error) if is_violation_of(&error, "users_email_key") => {
            return Err(AuthError::EmailExists.into());
        }
        Err(error) => return Err(error.into()),
    }
    session::revoke_all_of_user(&mut transaction, user.id, Some(session.session_id), now).await?;
    let notice = mail::Email::EmailChanged {
        new_email: mask_email(new_email),
    };
    let lang = Lang::parse(&user.lang).unwrap_or_default();
    outbox::enqueue(&mut transaction, &user.email, lang, &notice).await?;
    transaction.commit().await?;
    tracing::info!(user_id = %user.id, "account address changed");
    let profile = users::find(&context.pool, user.id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(ok(profile))
}
