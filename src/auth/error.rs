//! The Auth module's errors and their codes.

use crate::api::{ApiError, Code};
use crate::mail::MailError;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("a captcha is required")]
    CaptchaRequired,
    #[error("the captcha is wrong, expired or used")]
    InvalidCaptcha,
    #[error("the email is already registered")]
    EmailExists,
    #[error("the email code is wrong, expired, used or exhausted")]
    EmailCodeInvalid,
    #[error("the password length is outside 6..=128")]
    PasswordLength,
    #[error("the reset token is unknown, used or expired")]
    ResetTokenInvalid,
    #[error("an email was sent to this address less than the cooldown ago")]
    Cooldown { retry_after_secs: u64 },
    #[error("wrong email or password")]
    InvalidCredentials,
    #[error("the second-factor code is wrong, used or expired")]
    SecondFactorInvalid,
    #[error("no account has this email")]
    EmailNotFound,
    #[error("the session's user no longer exists")]
    UserNotFound,
    #[error("the email could not be sent: {0}")]
    EmailSendFailed(#[from] MailError),
    #[error("the session is missing, unknown, expired or revoked")]
    SessionInvalid,
    #[error("the account is frozen")]
    AccountFrozen,
    #[error("too many requests from this client")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("too many password hashes are waiting")]
    Busy,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> ApiError {
        let code = match &error {
            AuthError::CaptchaRequired => Code::CAPTCHA_REQUIRED,
            AuthError::InvalidCaptcha => Code::INVALID_CAPTCHA,
            AuthError::EmailExists => Code::EMAIL_EXISTS,
            AuthError::EmailCodeInvalid => Code::EMAIL_CODE_INVALID,
            AuthError::PasswordLength => {
                return ApiError::new(Code::PASSWORD_TOO_SHORT)
                    .with_detail("The password must have 6 to 128 characters.");
            }
            AuthError::ResetTokenInvalid => Code::TOKEN_INVALID,
            AuthError::Cooldown { retry_after_secs } => {
                return ApiError::new(Code::EMAIL_CODE_COOLDOWN)
                    .with_retry_after(*retry_after_secs);
            }
            AuthError::InvalidCredentials => Code::INVALID_PASSWORD,
            AuthError::SecondFactorInvalid => Code::SECOND_FACTOR_INVALID,
            AuthError::EmailNotFound => Code::EMAIL_NOT_FOUND,
            AuthError::UserNotFound => Code::USER_NOT_FOUND,
            AuthError::EmailSendFailed(_) => {
                return ApiError::new(Code::EMAIL_SEND_FAILED).with_cause(error);
            }
            AuthError::SessionInvalid => Code::UNAUTHORIZED_SESSION,
            AuthError::AccountFrozen => Code::ACCOUNT_FROZEN,
            AuthError::TooManyRequests { retry_after_secs } => {
                return ApiError::new(Code::TOO_MANY_REQUESTS).with_retry_after(*retry_after_secs);
            }
            AuthError::InvalidInput(detail) => return ApiError::bad_request(detail.clone()),
            AuthError::Busy => return ApiError::unavailable(1),
            AuthError::Database(_) => {
                let AuthError::Database(database) = error else {
                    unreachable!()
                };
                return ApiError::from(database);
            }
            AuthError::Internal(_) => return ApiError::internal(error),
        };
        ApiError::new(code)
    }
}
