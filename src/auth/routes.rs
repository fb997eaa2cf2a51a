//! The Auth endpoints: parse, throttle, call the flow, answer.

use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::captcha::{self, IssuedCaptcha};
use super::error::AuthError;
use super::input::{Email, check_password};
use super::login::{self, LoginAttempt};
use super::password::Passwords;
use super::reauth;
use super::recovery::{self, ResetSent};
use super::register::{self, CodeSent, LoggedIn};
use super::session::{self, ActiveUser, CurrentSession};
use super::two_factor;
use super::users::{self, Profile};
use crate::api::{
    self, ApiError, ApiJson, Authorized, ErrorBody, SuccessBody, ok, request_context,
};
use crate::limits::Rate;
use crate::state::AppState;

type Context = web::Data<AppState>;

/// The body of `email-code` and `password/forgot`.
#[derive(Deserialize, ToSchema)]
pub struct EmailWithCaptcha {
    #[schema(format = Email)]
    pub email: String,
    pub captcha_id: Option<String>,
    pub captcha: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct RegisterRequest {
    pub email: String,
    #[schema(value_type = String, min_length = 6, max_length = 128)]
    pub password: SecretString,
    pub email_code: String,
}

#[derive(Deserialize, ToSchema)]
pub struct LoginRequest {
    pub email: String,
    #[schema(value_type = String)]
    pub password: SecretString,
    pub captcha_id: Option<String>,
    pub captcha: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct ResetRequest {
    #[schema(value_type = String)]
    pub token: SecretString,
    #[schema(value_type = String, min_length = 6, max_length = 128)]
    pub password: SecretString,
}

#[derive(Deserialize, ToSchema)]
pub struct ChangeRequest {
    #[schema(value_type = String)]
    pub old_password: SecretString,
    #[schema(value_type = String, min_length = 6, max_length = 128)]
    pub new_password: SecretString,
}

/// What per-client throttles and login failures count by: the client's address (behind
/// `TRUSTED_PROXIES`, the one they forwarded), an IPv6 client's /64.
fn client_key(context: &AppState, req: &HttpRequest) -> String {
    api::client_key(req, &context.settings.trusted_proxies)
}

pub(super) async fn throttle(
    context: &AppState,
    class: &'static str,
    req: &HttpRequest,
    rate: Rate,
) -> Result<(), AuthError> {
    let decision = context
        .limiter
        .check(class, &client_key(context, req), rate)
        .await;
    if decision.allowed {
        Ok(())
    } else {
        Err(AuthError::TooManyRequests {
            retry_after_secs: decision.retry_after_secs(),
        })
    }
}

/// A new image captcha.
#[utoipa::path(get, path = "/myapi/auth/captcha", tag = "auth", responses(
    (status = 200, body = inline(SuccessBody<IssuedCaptcha>)),
    (status = 429, description = "Too many captchas from this IP.", body = ErrorBody)))]
pub async fn issue_captcha(context: Context, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let rate = Rate::per_minute(context.settings.auth.captchas_per_ip_per_minute);
    throttle(&context, "captcha", &req, rate).await?;
    let test_code = context.settings.captcha_test_code.as_deref();
    Ok(ok(captcha::issue(
        &context.pool,
        context.clock.now(),
        test_code,
    )
    .await?))
}

/// What every request for an email goes through: a valid address, the per-IP cap on sends,
/// then a captcha. Returns the normalized address.
pub(super) async fn address_for_a_send(
    context: &AppState,
    req: &HttpRequest,
    body: &EmailWithCaptcha,
) -> Result<Email, AuthError> {
    let email = Email::parse(&body.email)?;
    let rate = Rate::per_hour(context.settings.auth.sends_per_ip_per_hour);
    throttle(context, "email_send", req, rate).await?;
    let (id, answer) = (body.captcha_id.as_deref(), body.captcha.as_deref());
    captcha::consume(&context.pool, context.clock.now(), id, answer).await?;
    Ok(email)
}

/// Emails a registration code.
#[utoipa::path(post, path = "/myapi/auth/email-code", tag = "auth", request_body = EmailWithCaptcha,
    responses(
    (status = 200, body = inline(SuccessBody<CodeSent>)),
    (status = 400, description = "40002 captcha required, 40001 invalid captcha, 40003 email \
        exists, 40008 cooldown (with Retry-After), or a malformed field.", body = ErrorBody),
    (status = 429, description = "Too many emails requested from this IP.", body = ErrorBody),
    (status = 500, description = "50011 the email could not be sent.", body = ErrorBody)))]
pub async fn send_email_code(
    context: Context,
    req: HttpRequest,
    ApiJson(body): ApiJson<EmailWithCaptcha>,
) -> Result<HttpResponse, ApiError> {
    let email = address_for_a_send(&context, &req, &body).await?;
    Ok(ok(register::send_code(
        &context,
        email.as_str(),
        request_context().lang,
    )
    .await?))
}

/// Creates an account with an emailed code and logs it in.
#[utoipa::path(post, path = "/myapi/auth/register", tag = "auth", request_body = RegisterRequest,
    responses(
    (status = 200, body = inline(SuccessBody<LoggedIn>)),
    (status = 400, description = "40003 email exists, 40004 email code invalid, 40005 password \
        length, or a malformed field.", body = ErrorBody),
    (status = 429, description = "Too many registrations from this IP, or too many wrong codes \
        for this address today.", body = ErrorBody)))]
pub async fn register(
    context: Context,
    passwords: web::Data<Passwords>,
    req: HttpRequest,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> Result<HttpResponse, ApiError> {
    let email = Email::parse(&body.email)?;
    check_password(&body.password)?;
    let rate = Rate::per_minute(context.settings.auth.login_per_ip_per_minute);
    throttle(&context, "register", &req, rate).await?;
    // The code is judged first: without the code sent to it, an address is 40004 whether or
    // not it has an account, so registration tells a stranger nothing. (A live code exists only
    // for an address that was free when it was sent; one taken since is 40003 at the insert.)
    let client = session::Client::of(&req, &context.settings.trusted_proxies);
    Ok(ok(register::register(
        &context,
        &passwords.for_client(client_key(&context, &req)),
        email.as_str(),
        &body.password,
        &body.email_code,
        &client,
    )
    .await?))
}

/// Logs in with email and password. An account with two-factor sign-in answers
/// `mfa_required`, a `ticket` and its `expires_in` instead of a session: the second step is
/// `/myapi/auth/login/2fa`.
#[utoipa::path(post, path = "/myapi/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
    (status = 200, body = inline(SuccessBody<login::LoginAnswer>)),
    (status = 400, description = "40002 captcha required, 40001 invalid captcha.", body = ErrorBody),
    (status = 401, description = "40111 wrong email or password.", body = ErrorBody),
    (status = 403, description = "40301 the account is frozen.", body = ErrorBody),
    (status = 429, description = "Too many logins from this IP.", body = ErrorBody)))]
pub async fn login(
    context: Context,
    passwords: web::Data<Passwords>,
    req: HttpRequest,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let email = Email::parse(&body.email)?;
    let rate = Rate::per_minute(context.settings.auth.login_per_ip_per_minute);
    throttle(&context, "login", &req, rate).await?;
    let ip = client_key(&context, &req);
    let client = session::Client::of(&req, &context.settings.trusted_proxies);
    let attempt = LoginAttempt {
        email: email.as_str(),
        password: &body.password,
        captcha_id: body.captcha_id.as_deref(),
        captcha: body.captcha.as_deref(),
        ip: &ip,
        client: &client,
    };
    let passwords = passwords.for_client(ip.clone());
    Ok(ok(login::login(&context, &passwords, attempt).await?))
}

/// Ends the current session.
#[utoipa::path(post, path = "/myapi/auth/logout", tag = "auth", security(("session" = [])),
    responses(
    (status = 200, body = inline(SuccessBody<Option<String>>)),
    (status = 401, description = "40101 no valid session.", body = ErrorBody)))]
pub async fn logout(context: Context, session: CurrentSession) -> Result<HttpResponse, ApiError> {
    let mut connection = context.pool.acquire().await?;
    session::revoke(&mut connection, session.session_id, context.clock.now()).await?;
    Ok(ok(()))
}

/// Emails a password reset link.
#[utoipa::path(post, path = "/myapi/auth/password/forgot", tag = "auth", request_body = EmailWithCaptcha,
    responses(
    (status = 200, body = inline(SuccessBody<ResetSent>)),
    (status = 400, description = "40002 captcha required, 40001 invalid captcha, 40008 \
        cooldown (with Retry-After).", body = ErrorBody),
    (status = 404, description = "40401 no account has this email.", body = ErrorBody),
    (status = 429, description = "Too many emails requested from this IP.", body = ErrorBody),
    (status = 500, description = "50011 the email could not be sent.", body = ErrorBody)))]
pub async fn forgot_password(
    context: Context,
    req: HttpRequest,
    ApiJson(body): ApiJson<EmailWithCaptcha>,
) -> Result<HttpResponse, ApiError> {
    let email = address_for_a_send(&context, &req, &body).await?;
    Ok(ok(recovery::forgot(
        &context,
        email.as_str(),
        request_context().lang,
    )
    .await?))
}

/// Sets a new password with the emailed token; every session ends.
#[utoipa::path(post, path = "/myapi/auth/password/reset", tag = "auth", request_body = ResetRequest,
    responses(
    (status = 200, body = inline(SuccessBody<Option<String>>)),
    (status = 400, description = "40006 token invalid or expired, 40005 password length.",
        body = ErrorBody)))]
pub async fn reset_password(
    context: Context,
    passwords: web::Data<Passwords>,
    req: HttpRequest,
    ApiJson(body): ApiJson<ResetRequest>,
) -> Result<HttpResponse, ApiError> {
    check_password(&body.password)?;
    recovery::reset(
        &context,
        &passwords.for_client(client_key(&context, &req)),
        &body.token,
        &body.password,
        request_context().lang,
    )
    .await?;
    Ok(ok(()))
}

/// Changes the password of the logged-in user; the other sessions end.
#[utoipa::path(post, path = "/myapi/auth/password/change", tag = "auth", request_body = ChangeRequest,
    security(("session" = [])), responses(
    (status = 200, body = inline(SuccessBody<Option<String>>)),
    (status = 400, description = "40005 password length.", body = ErrorBody),
    (status = 401, description = "40101 no valid session, 40111 wrong old password.",
        body = ErrorBody),
    (status = 429, description = "Too many wrong old passwords for this account or from this \
        client (with Retry-After).", body = ErrorBody)))]
pub async fn change_password(
    context: Context,
    passwords: web::Data<Passwords>,
    req: HttpRequest,
    Authorized(ActiveUser(session), ApiJson(body)): Authorized<ActiveUser, ApiJson<ChangeRequest>>,
) -> Result<HttpResponse, ApiError> {
    check_password(&body.new_password)?;
    // Wrong old passwords count per account and per client, like every password confirmation.
    let subjects = reauth::Subjects::of(&context, &req, &session);
    subjects.check_budget(&context).await?;
    let lang = request_context().lang;
    let changed = recovery::change(
        &context,
        &passwords.for_client(subjects.client.clone()),
        &session,
        &body.old_password,
        &body.new_password,
        lang,
    )
    .await;
    if let Err(AuthError::InvalidCredentials) = &changed {
        subjects.count_failure(&context).await;
    }
    changed?;
    Ok(ok(()))
}

/// The profile as its own user reads it: with whether two-factor sign-in is on.
#[derive(Serialize, ToSchema)]
pub struct OwnProfile {
    #[serde(flatten)]
    pub profile: Profile,
    /// Whether sign-in asks for a second factor (`/myapi/auth/2fa/...`).
    pub two_factor: bool,
}

/// The logged-in user's profile.
#[utoipa::path(get, path = "/myapi/user/profile", tag = "auth", security(("session" = [])),
    responses(
    (status = 200, body = inline(SuccessBody<OwnProfile>)),
    (status = 401, description = "40101 no valid session.", body = ErrorBody),
    (status = 403, description = "40301 the account is frozen.", body = ErrorBody),
    (status = 404, description = "40402 the session's user no longer exists.", body = ErrorBody)))]
pub async fn profile(
    context: web::Data<AppState>,
    ActiveUser(session): ActiveUser,
) -> Result<HttpResponse, ApiError> {
    let mut connection = context.pool.acquire().await?;
    let two_factor = two_factor::enabled(&mut connection, session.user.id).await?;
    Ok(ok(OwnProfile {
        profile: session.user,
        two_factor,
    }))
}

/// The most credits an alert threshold may name.
const MAX_ALERT_CREDITS: i64 = 1_000_000_000_000;

#[derive(Deserialize, ToSchema)]
pub struct ProfileChange {
    /// Email the user once when the credits fall below this; null turns the alert off.
    #[serde(default, deserialize_with = "api::present")]
    #[schema(value_type = Option<i64>)]
    pub low_balance_alert: Option<Option<i64>>,
    /// The language of the emails: `en` or `zh`.
    pub lang: Option<String>,
}

/// Changes the email language and the low-balance alert; answers the profile.
#[utoipa::path(patch, path = "/myapi/user/profile", tag = "auth", request_body = ProfileChange,
    security(("session" = [])), responses(
    (status = 200, body = inline(SuccessBody<Profile>)),
    (status = 400, description = "A language other than en or zh, or a threshold outside \
        1..=10^12 credits.", body = ErrorBody),
    (status = 401, description = "40101 no valid session.", body = ErrorBody)))]
pub async fn change_profile(
    context: web::Data<AppState>,
    Authorized(ActiveUser(session), ApiJson(body)): Authorized<ActiveUser, ApiJson<ProfileChange>>,
) -> Result<HttpResponse, ApiError> {
    if let Some(lang) = &body.lang
        && !matches!(lang.as_str(), "en" | "zh")
    {
        return Err(ApiError::bad_request("`lang`: en or zh."));
    }
    if let Some(Some(alert)) = body.low_balance_alert
        && !(1..=MAX_ALERT_CREDITS).contains(&alert)
    {
        return Err(ApiError::bad_request(
            "`low_balance_alert`: from 1 to 1000000000000 credits, or null.",
        ));
    }
    let user_id = session.user.id;
    let preferences = users::Preferences {
        lang: body.lang,
        low_balance_alert: body.low_balance_alert,
    };
    users::set_preferences(&context.pool, user_id, preferences).await?;
    let profile = users::find(&context.pool, user_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(ok(profile))
}

#[derive(Deserialize, ToSchema)]
pub struct SecondStepRequest {
    /// The ticket the login answered.
    pub ticket: String,
    /// A code of the authenticator, or a recovery code.
    pub code: String,
    pub captcha_id: Option<String>,
    pub captcha: Option<String>,
}

/// The second step of an enrolled account's login: the ticket and a TOTP or recovery code
/// (each accepted once), counted and captcha-guarded like passwords. Answers as a login.
#[utoipa::path(post, path = "/myapi/auth/login/2fa", tag = "auth",
    request_body = SecondStepRequest, responses(
    (status = 200, body = inline(SuccessBody<LoggedIn>)),
    (status = 400, description = "40009 a wrong, used or expired code or ticket; 40002 captcha \
        required after three failures, 40001 invalid captcha.", body = ErrorBody),
    (status = 403, description = "40301 the account is frozen.", body = ErrorBody),
    (status = 429, description = "Too many logins from this IP.", body = ErrorBody)))]
pub async fn login_second_step(
    context: Context,
    req: HttpRequest,
    ApiJson(body): ApiJson<SecondStepRequest>,
) -> Result<HttpResponse, ApiError> {
    let rate = Rate::per_minute(context.settings.auth.login_per_ip_per_minute);
    throttle(&context, "login", &req, rate).await?;
    let ip = client_key(&context, &req);
    let client = session::Client::of(&req, &context.settings.trusted_proxies);
    let attempt = login::SecondStepAttempt {
        ticket: body.ticket.trim(),
        code: &body.code,
        captcha_id: body.captcha_id.as_deref(),
        captcha: body.captcha.as_deref(),
        ip: &ip,
        client: &client,
    };
    Ok(ok(login::second_step(&context, attempt).await?))
}
