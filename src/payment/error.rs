//! The Payment module's errors and their codes.

use crate::api::{ApiError, Code};

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error("the plan is unknown, inactive or free")]
    InvalidPlan,
    #[error("the user already holds a live subscription")]
    SubscriptionExists,
    #[error("the redemption code cannot be redeemed: {0}")]
    RedemptionInvalid(&'static str),
    #[error("too many wrong redemption codes")]
    RedemptionThrottled { retry_after_secs: u64 },
    #[error("no live Stripe subscription to change")]
    NoSubscription,
    #[error("subscriptions are paid by card only")]
    SubscriptionCardOnly,
    #[error("unknown payment method")]
    UnsupportedPayment,
    #[error("the order expired")]
    OrderExpired,
    #[error("the order is not pending")]
    OrderNotPending,
    #[error("only paid subscription orders can be cancelled")]
    OrderNotPaidSubscription,
    #[error("the order is not a subscription")]
    NotSubscriptionOrder,
    #[error("the order's provider is not Stripe")]
    StripeOnlyCancel,
    #[error("the order's subscription id is not known yet")]
    SubscriptionIdMissing,
    #[error("the order belongs to another user")]
    ForbiddenResource,
    #[error("no such order")]
    OrderNotFound,
    #[error("payments are not configured")]
    PaymentsNotConfigured,
    #[error("Stripe refused or failed to create the checkout session: {0}")]
    CheckoutFailed(String),
    #[error("the provider cannot cancel now")]
    CancelUnsupported,
    #[error("Stripe refused or failed to cancel the subscription: {0}")]
    CancelFailed(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<crate::ledger::LedgerError> for PaymentError {
    fn from(error: crate::ledger::LedgerError) -> Self {
        match error {
            crate::ledger::LedgerError::Database(error) => PaymentError::Database(error),
            other => PaymentError::Internal(other.into()),
        }
    }
}

impl From<PaymentError> for ApiError {
    fn from(error: PaymentError) -> ApiError {
        let code = match &error {
            PaymentError::InvalidPlan => Code::INVALID_PLAN_TYPE,
            PaymentError::SubscriptionCardOnly => Code::SUBSCRIPTION_CARD_ONLY,
            PaymentError::SubscriptionExists => Code::SUBSCRIPTION_EXISTS,
            PaymentError::NoSubscription => Code::NO_SUBSCRIPTION,
            PaymentError::RedemptionInvalid(why) => {
                return ApiError::new(Code::REDEMPTION_CODE_INVALID).with_detail(*why);
            }
            PaymentError::RedemptionThrottled { retry_after_secs } => {
                return ApiError::new(Code::TOO_MANY_REQUESTS).with_retry_after(*retry_after_secs);
            }
            PaymentError::UnsupportedPayment => {
                return ApiError::new(Code::UNSUPPORTED_PAYMENT)
                    .with_detail("Use credit_card, alipay or wechat_pay.");
            }
            PaymentError::OrderExpired => Code::ORDER_EXPIRED,
            PaymentError::OrderNotPending => Code::ORDER_NOT_PENDING,
            PaymentError::OrderNotPaidSubscription => Code::ORDER_NOT_PAID_SUBSCRIPTION,
            PaymentError::NotSubscriptionOrder => Code::NOT_SUBSCRIPTION_ORDER,
            PaymentError::StripeOnlyCancel => Code::STRIPE_ONLY_CANCEL,
            PaymentError::SubscriptionIdMissing => Code::SUBSCRIPTION_ID_MISSING,
            PaymentError::ForbiddenResource => Code::FORBIDDEN_RESOURCE,
            PaymentError::OrderNotFound => Code::ORDER_NOT_FOUND,
            PaymentError::PaymentsNotConfigured => {
                return ApiError::new(Code::CREATE_CHECKOUT_FAILED).with_detail(
                    "Payments are not configured on this server (STRIPE_SECRET_KEY is unset).",
                );
            }
            PaymentError::CheckoutFailed(_) => {
                return ApiError::new(Code::CREATE_CHECKOUT_FAILED).with_cause(error);
            }
            PaymentError::CancelUnsupported => Code::CANCEL_UNSUPPORTED,
            PaymentError::CancelFailed(_) => {
                return ApiError::new(Code::CANCEL_SUBSCRIPTION_FAILED).with_cause(error);
            }
            PaymentError::Database(_) => {
                let PaymentError::Database(database) = error else {
                    unreachable!()
                };
                return ApiError::from(database);
            }
            PaymentError::Internal(_) => return ApiError::internal(error),
        };
        ApiError::new(code)
    }
}
