//! The code catalogue: every global code and every module sub code of the seed's error table, in
//! one table. The envelope, the OpenAPI document, `/myapi/error-codes` and `/docs/errors` all read
//! it, so a code's name, HTTP class and messages are defined exactly once.

use serde::Serialize;
use utoipa::ToSchema;

/// The business module a code belongs to, as grouped by the seed's reference page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Module {
    Global,
    Auth,
    Gateway,
    Payment,
}

impl Module {
    /// The sub-code ranges of a module, as printed on the seed's reference page.
    pub fn ranges(self) -> &'static [(u32, u32)] {
        match self {
            Module::Global => &[],
            Module::Auth => &[(40001, 40111), (40401, 40402), (50011, 50011)],
            Module::Gateway => &[
                (40101, 40301),
                (42901, 42903),
                (50201, 50201),
                (50301, 50301),
            ],
            Module::Payment => &[
                (40021, 40028),
                (40302, 40302),
                (40411, 40411),
                (50021, 50023),
            ],
        }
    }

    /// Where the module's codes that the seed does not have live (extensions, marked as such in
    /// the catalogue): the numbers right after the seed's own in the same HTTP class.
    pub fn extension_ranges(self) -> &'static [(u32, u32)] {
        match self {
            Module::Auth => &[(40009, 40019)],
            Module::Gateway => &[(40303, 40309)],
            Module::Payment => &[(40029, 40039)],
            Module::Global => &[],
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Module::Global => "Global",
            Module::Auth => "Auth",
            Module::Gateway => "Gateway",
            Module::Payment => "Payment",
        }
    }

    pub fn purpose(self) -> &'static str {
        match self {
            Module::Global => "HTTP-level outcome shared by every endpoint.",
            Module::Auth => "Login/register, captcha/email code, password reset/change.",
            Module::Gateway => {
                "API key auth, credits check, rate limit, provider request failures."
            }
            Module::Payment => "Checkout creation, order state checks, subscription cancellation.",
        }
    }

    pub const WITH_SUB_CODES: [Module; 3] = [Module::Auth, Module::Gateway, Module::Payment];
}

/// A code of the catalogue: a three-digit global code or a five-digit module sub code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Code(u32);

/// One row of the catalogue.
#[derive(Debug, Serialize, ToSchema)]
pub struct CodeInfo {
    /// The global code; equal to the HTTP status.
    pub code: u16,
    /// The five-digit module code, absent for global codes.
    pub sub_code: Option<u32>,
    pub name: &'static str,
    pub description: &'static str,
    pub recommendation: &'static str,
    pub module: Module,
    /// The `msg` of the envelope in English.
    pub message_en: &'static str,
    /// The `msg` of the envelope in Chinese.
    pub message_zh: &'static str,
    /// Not in the seed's table: a code this service added in its module's extension range.
    pub extension: bool,
}

impl CodeInfo {
    pub fn message(&self, lang: Lang) -> &'static str {
        match lang {
            Lang::En => self.message_en,
            Lang::Zh => self.message_zh,
        }
    }

    /// The code this row is looked up by: the sub code when there is one.
    pub fn key(&self) -> u32 {
        self.sub_code.unwrap_or(u32::from(self.code))
    }
}

/// The language of `msg`, chosen by `X-Lang` or `lang`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Lang {
    #[default]
    En,
    Zh,
}

impl Lang {
    /// Reads `zh`, `zh-CN`, `en`, `en-US`...; anything else is not a language we speak.
    pub fn parse(value: &str) -> Option<Lang> {
        let primary = value.trim().split(['-', '_']).next()?.to_ascii_lowercase();
        match primary.as_str() {
            "zh" => Some(Lang::Zh),
            "en" => Some(Lang::En),
            _ => None,
        }
    }
}

macro_rules! catalogue {
    ($( $(#[$extension:ident])? $konst:ident = $key:literal, $module:ident, $name:literal,
        $description:literal, $recommendation:literal, $zh:literal; )*) => {
        impl Code {
            $( pub const $konst: Code = Code($key); )*
        }

        /// The whole catalogue, global codes first, then each module in the seed's order.
        pub static CATALOGUE: &[CodeInfo] = &[
            $( CodeInfo {
                code: if $key < 1000 { $key } else { ($key / 100) as u16 },
                sub_code: if $key < 1000 { None } else { Some($key) },
                name: $name,
                description: $description,
                recommendation: $recommendation,
                module: Module::$module,
                message_en: $description,
                message_zh: $zh,
                extension: catalogue!(@extension $($extension)?),
            }, )*
        ];
    };
    (@extension extension) => { true };
    (@extension) => { false };
}

catalogue! {
    SUCCESS = 200, Global, "Success", "Request processed successfully.",
        "Use `data` for business payload.", "成功";
    BAD_REQUEST = 400, Global, "Bad Request", "Invalid parameters or business validation failed.",
        "Check required fields, value ranges, and request format.", "请求参数无效或业务校验失败。";
    UNAUTHORIZED = 401, Global, "Unauthorized",
        "Authentication failed (login required, missing/invalid API key).",
        "Re-login or provide a valid `X-API-Key`.", "认证失败（需要登录，或 API Key 缺失/无效）。";
    INSUFFICIENT_BALANCE_GLOBAL = 402, Global, "Insufficient Balance",
        "Insufficient balance or call quota for this request.",
        "Recharge or upgrade your plan and retry.", "余额或调用额度不足。";
    FORBIDDEN = 403, Global, "Forbidden",
        "You do not have permission or account status is restricted.",
        "Check account status and endpoint permission.", "没有权限，或账户状态受限。";
    NOT_FOUND = 404, Global, "Not Found", "Requested resource does not exist.",
        "Verify IDs/order numbers and whether data exists.", "请求的资源不存在。";
    TOO_MANY_REQUESTS = 429, Global, "Rate Limit Exceeded",
        "Request frequency exceeded per-second/per-hour/monthly limits.",
        "Use retry with backoff or lower request frequency.", "请求频率超过限制。";
    INTERNAL = 500, Global, "Internal Server Error", "Server-side processing failed.",
        "Retry later and contact support if it persists.", "服务器内部错误。";
    BAD_GATEWAY = 502, Global, "Service Temporarily Unavailable",
        "The service request failed to be processed.", "Please try again later.",
        "服务请求处理失败，请稍后重试。";
    SERVICE_BUSY = 503, Global, "Service Busy",
        "System is busy or global protection limit is triggered.", "Retry after a short wait.",
        "系统繁忙或触发全局保护限制。";

    // Auth
    INVALID_CAPTCHA = 40001, Auth, "Invalid Captcha", "Image captcha is invalid.",
        "Refresh captcha and try again.", "图形验证码错误。";
    CAPTCHA_REQUIRED = 40002, Auth, "Captcha Required", "Captcha is required for this operation.",
        "Submit captcha value.", "此操作需要图形验证码。";
    EMAIL_EXISTS = 40003, Auth, "Email Exists", "Email is already registered.",
        "Use login or reset password.", "该邮箱已注册。";
    EMAIL_CODE_INVALID = 40004, Auth, "Email Code Invalid",
        "Email verification code is invalid or expired.", "Request a new email code.",
        "邮箱验证码无效或已过期。";
    PASSWORD_TOO_SHORT = 40005, Auth, "Password Too Short",
        "Password length is below minimum requirement.", "Use at least 6 characters.",
        "密码长度不符合要求。";
    TOKEN_INVALID = 40006, Auth, "Token Invalid", "Reset token is invalid or expired.",
        "Request a new reset token.", "重置令牌无效或已过期。";
    INVALID_PLAN_TYPE = 40007, Auth, "Invalid Plan Type", "Plan type or plan name is invalid.",
        "Use a valid plan from `/myapi/plans`.", "套餐类型或名称无效。";
    EMAIL_CODE_COOLDOWN = 40008, Auth, "Email Code Cooldown",
        "Verification code requested too frequently.", "Wait for cooldown and retry.",
        "验证码请求过于频繁。";
    #[extension]
    SECOND_FACTOR_INVALID = 40009, Auth, "Second Factor Invalid",
        "The two-factor code or login ticket is wrong, used or expired.",
        "Enter the current authenticator code or an unused recovery code; log in again if \
        the ticket expired.", "双重验证码或登录凭据错误、已使用或已过期。";
    INVALID_PASSWORD = 40111, Auth, "Invalid Password", "Email/password verification failed.",
        "Check credentials and retry.", "邮箱或密码错误。";
    EMAIL_NOT_FOUND = 40401, Auth, "Email Not Found", "Email does not exist.",
        "Check email address or register first.", "邮箱不存在。";
    USER_NOT_FOUND = 40402, Auth, "User Not Found", "User record does not exist.",
        "Verify login state and user ID.", "用户不存在。";
    EMAIL_SEND_FAILED = 50011, Auth, "Email Send Failed", "Failed to send verification email.",
        "Retry later.", "验证邮件发送失败。";

    // Gateway
    UNAUTHORIZED_SESSION = 40101, Gateway, "Unauthorized Session",
        "Login session is missing or invalid.", "Login again.", "登录会话缺失或无效。";
    API_KEY_MISSING = 40102, Gateway, "API Key Missing", "API key is not provided.",
        "Provide `X-API-Key` header or bearer token.", "未提供 API Key。";
    API_KEY_INVALID = 40103, Gateway, "API Key Invalid", "API key is invalid.",
        "Use a valid API key.", "API Key 无效。";
    INSUFFICIENT_BALANCE = 40201, Gateway, "Insufficient Balance",
        "Insufficient balance or call quota.", "Recharge or upgrade plan and retry.",
        "余额或调用额度不足。";
    ACCOUNT_FROZEN = 40301, Gateway, "Account Frozen", "Account is frozen or restricted.",
        "Contact support to restore account.", "账户已被冻结或受限。";
    RPS_LIMIT_EXCEEDED = 42901, Gateway, "RPS Limit Exceeded", "Per-second rate limit exceeded.",
        "Reduce request burst and retry with backoff.", "超过每秒请求限制。";
    RPH_LIMIT_EXCEEDED = 42902, Gateway, "RPH Limit Exceeded", "Per-hour rate limit exceeded.",
        "Lower request frequency.", "超过每小时请求限制。";
    MONTHLY_QUOTA_EXCEEDED = 42903, Gateway, "Monthly Quota Exceeded",
        "Monthly call quota reached.", "Upgrade plan or wait next cycle.", "已达到每月调用额度。";
    UPSTREAM_FAILED = 50201, Gateway, "Service Temporarily Unavailable",
        "The service request failed to be processed.", "Please try again later.",
        "服务请求处理失败，请稍后重试。";
    GLOBAL_THROTTLE = 50301, Gateway, "Global Throttle Triggered",
        "Global protection limit is triggered.", "Retry after a short wait.",
        "触发全局保护限制，请稍后重试。";
    #[extension]
    KEY_ADDRESS_REFUSED = 40303, Gateway, "API Key Address Refused",
        "The API key may not be used from this client address.",
        "Call from an address in the key's `allowed_ips`, or change them.",
        "该 API Key 不允许从此地址调用。";
    #[extension]
    KEY_PROVIDER_REFUSED = 40304, Gateway, "API Key Provider Refused",
        "The API key may not call this provider.",
        "Use a key whose `providers` include it, or change them.", "该 API Key 不允许调用此服务。";
    #[extension]
    KEY_SPEND_CAP_REACHED = 40305, Gateway, "API Key Spend Cap Reached",
        "The API key has spent its spend cap for the period.",
        "Raise or clear the key's `spend_cap`, use another key, or wait for the next month \
        (a monthly cap).", "该 API Key 已达到本期消费上限。";

    // Payment
    ORDER_EXPIRED = 40021, Payment, "Order Expired", "Order has expired before payment.",
        "Create a new order.", "订单已在支付前过期。";
    ORDER_NOT_PENDING = 40022, Payment, "Order Not Pending", "Order is not in pending state.",
        "Check order status before checkout.", "订单不处于待支付状态。";
    SUBSCRIPTION_CARD_ONLY = 40023, Payment, "Subscription Card Only",
        "Subscription mode only supports card payment.", "Use `credit_card` payment method.",
        "订阅模式仅支持银行卡支付。";
    UNSUPPORTED_PAYMENT = 40024, Payment, "Unsupported Payment",
        "Payment method is not supported.", "Choose a supported payment method.",
        "不支持该支付方式。";
    ORDER_NOT_PAID_SUBSCRIPTION = 40025, Payment, "Order Not Paid Subscription",
        "Only paid subscription orders can be cancelled.",
        "Cancel only paid subscription orders.", "只能取消已支付的订阅订单。";
    NOT_SUBSCRIPTION_ORDER = 40026, Payment, "Not Subscription Order",
        "Current order is not a subscription order.",
        "Check billing mode before cancel request.", "当前订单不是订阅订单。";
    STRIPE_ONLY_CANCEL = 40027, Payment, "Stripe Only Cancel",
        "Subscription cancel endpoint only supports Stripe subscriptions.",
        "Use Stripe subscription orders for this endpoint.", "取消订阅接口仅支持 Stripe 订阅。";
    SUBSCRIPTION_ID_MISSING = 40028, Payment, "Subscription ID Missing",
        "Subscription ID is missing for this order.", "Wait for webhook sync or retry later.",
        "该订单缺少订阅 ID。";
    FORBIDDEN_RESOURCE = 40302, Payment, "Forbidden Resource", "You do not own this resource.",
        "Use the resource under your own account.", "您不拥有此资源。";
    ORDER_NOT_FOUND = 40411, Payment, "Order Not Found", "Order record does not exist.",
        "Verify `order_no` value.", "订单不存在。";
    CREATE_CHECKOUT_FAILED = 50021, Payment, "Create Checkout Failed",
        "Failed to create payment checkout session.",
        "Retry later or use another payment method.", "创建支付会话失败。";
    CANCEL_UNSUPPORTED = 50022, Payment, "Cancel Unsupported",
        "Current provider does not support cancellation.",
        "Use supported provider or contact support.", "当前支付渠道不支持取消。";
    CANCEL_SUBSCRIPTION_FAILED = 50023, Payment, "Cancel Subscription Failed",
        "Subscription cancellation failed.", "Retry later; if persistent, contact support.",
        "取消订阅失败。";
    #[extension]
    SUBSCRIPTION_EXISTS = 40029, Payment, "Subscription Exists",
        "An active, trialing or past-due subscription already exists.",
        "Change the plan with `/myapi/subscription/change` instead of buying another.",
        "已有生效、试用或逾期的订阅。";
    #[extension]
    REDEMPTION_CODE_INVALID = 40030, Payment, "Redemption Code Invalid",
        "The redemption code is unknown, used, expired or withdrawn.",
        "Check the code; each code can be redeemed once.", "兑换码无效、已使用、已过期或已停用。";
    #[extension]
    NO_SUBSCRIPTION = 40031, Payment, "No Subscription",
        "There is no active Stripe subscription to change.",
        "Buy a subscription plan with `/myapi/orders` first.", "没有可变更的有效 Stripe 订阅。";
}

impl Code {
    /// The catalogue row of this code. Every `Code` constant comes from the table, so the
    /// look-up cannot miss.
    pub fn info(self) -> &'static CodeInfo {
        CATALOGUE
            .iter()
            .find(|info| info.key() == self.0)
            .expect("every Code constant is generated from the catalogue")
    }

    pub fn number(self) -> u32 {
        self.0
    }

    /// The HTTP status of this code: the first three digits.
    pub fn http_status(self) -> u16 {
        self.info().code
    }

    /// The global code for an HTTP status outside the catalogue's ten (405, 413, ...).
    pub fn for_status(status: u16) -> Code {
        match status {
            200 => Code::SUCCESS,
            401 => Code::UNAUTHORIZED,
            402 => Code::INSUFFICIENT_BALANCE_GLOBAL,
            403 => Code::FORBIDDEN,
            // An unknown method on a known path is an unknown route for the contract.
            404 | 405 => Code::NOT_FOUND,
            429 => Code::TOO_MANY_REQUESTS,
            502 => Code::BAD_GATEWAY,
            503 => Code::SERVICE_BUSY,
            400..=499 => Code::BAD_REQUEST,
            _ => Code::INTERNAL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    // That every code of the seed's table is served once, with its name, meaning and module,
    // is checked against the seed file itself by `tests/foundation.rs`.

    #[test]
    fn sub_codes_lie_in_their_module_ranges_and_share_the_http_class() {
        for info in CATALOGUE {
            match info.sub_code {
                None => assert!(info.code >= 200 && info.code < 600),
                Some(sub) => {
                    assert_eq!(u32::from(info.code), sub / 100, "{sub}: class mismatch");
                    let ranges = if info.extension {
                        info.module.extension_ranges()
                    } else {
                        info.module.ranges()
                    };
                    let in_range = ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&sub));
                    assert!(
                        in_range,
                        "{sub} lies outside the ranges of {:?}",
                        info.module
                    );
                }
            }
        }
    }

    #[test]
    fn every_code_has_both_messages() {
        let mut keys = HashSet::new();
        for info in CATALOGUE {
            assert!(keys.insert(info.key()));
            assert!(!info.message_en.is_empty() && !info.message_zh.is_empty());
            assert!(
                info.message_zh.chars().any(|c| c > '\u{2e80}'),
                "{} zh",
                info.key()
            );
        }
    }

    #[test]
    fn lang_parsing_accepts_regional_variants() {
        assert_eq!(Lang::parse("zh-CN"), Some(Lang::Zh));
        assert_eq!(Lang::parse("EN"), Some(Lang::En));
        assert_eq!(Lang::parse("fr"), None);
    }
}
