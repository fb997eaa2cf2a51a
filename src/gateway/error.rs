//! The gateway's errors and their codes, in the contract's order of checks.

use crate::api::{ApiError, Code};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("no API key")]
    KeyMissing,
    #[error("unknown or revoked API key")]
    KeyInvalid,
    #[error("the API key expired")]
    KeyExpired,
    #[error("the API key may not be used from this address")]
    KeyAddressRefused,
    #[error("the API key may not call this provider")]
    KeyProviderRefused,
    #[error("too many unknown keys from this client")]
    TooManyBadKeys { retry_after_secs: u64 },
    #[error("the account is frozen")]
    AccountFrozen,
    #[error("no such provider")]
    UnknownProvider,
    #[error("the path leaves the provider's base path")]
    BadPath,
    #[error("per-second limit")]
    PerSecond { retry_after_secs: u64 },
    #[error("per-hour limit")]
    PerHour { retry_after_secs: u64 },
    #[error("monthly quota")]
    MonthlyQuota { retry_after_secs: u64 },
    #[error("not enough credits")]
    InsufficientCredits,
    #[error("the API key's spend cap is reached")]
    SpendCapReached,
    #[error("global protection limit")]
    Overloaded,
    #[error("the upstream failed: {0}")]
    Upstream(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<GatewayError> for ApiError {
    fn from(error: GatewayError) -> ApiError {
        let code = match &error {
            GatewayError::KeyMissing => Code::API_KEY_MISSING,
            GatewayError::KeyInvalid => Code::API_KEY_INVALID,
            GatewayError::KeyExpired => {
                return ApiError::new(Code::API_KEY_INVALID).with_detail("The API key expired.");
            }
            GatewayError::KeyAddressRefused => Code::KEY_ADDRESS_REFUSED,
            GatewayError::KeyProviderRefused => Code::KEY_PROVIDER_REFUSED,
            GatewayError::TooManyBadKeys { retry_after_secs } => {
                return ApiError::new(Code::TOO_MANY_REQUESTS)
                    .with_detail("Too many unknown API keys from this client.")
                    .with_retry_after(*retry_after_secs);
            }
            GatewayError::AccountFrozen => Code::ACCOUNT_FROZEN,
            GatewayError::UnknownProvider => {
                return ApiError::not_found().with_detail("No such provider.");
            }
            GatewayError::BadPath => {
                return ApiError::bad_request("The path may not leave the provider's base path.");
            }
            GatewayError::PerSecond { retry_after_secs } => {
                return ApiError::new(Code::RPS_LIMIT_EXCEEDED).with_retry_after(*retry_after_secs);
            }
            GatewayError::PerHour { retry_after_secs } => {
                return ApiError::new(Code::RPH_LIMIT_EXCEEDED).with_retry_after(*retry_after_secs);
            }
            GatewayError::MonthlyQuota { retry_after_secs } => {
                return ApiError::new(Code::MONTHLY_QUOTA_EXCEEDED)
                    .with_retry_after(*retry_after_secs);
            }
            GatewayError::InsufficientCredits => Code::INSUFFICIENT_BALANCE,
            GatewayError::SpendCapReached => Code::KEY_SPEND_CAP_REACHED,
            GatewayError::Overloaded => {
                return ApiError::new(Code::GLOBAL_THROTTLE).with_retry_after(1);
            }
            GatewayError::Upstream(_) => {
                tracing::warn!(error = %error, "upstream call failed");
                Code::UPSTREAM_FAILED
            }
            GatewayError::Database(_) => {
                let GatewayError::Database(database) = error else {
                    unreachable!()
                };
                return ApiError::from(database);
            }
            GatewayError::Internal(_) => return ApiError::internal(error),
        };
        ApiError::new(code)
    }
}
