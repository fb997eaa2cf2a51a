//! The templates under `templates/`, compiled into the binary so it runs from any directory.
//! HTML templates are auto-escaped; text ones are not.

use std::sync::OnceLock;

use minijinja::Environment;

macro_rules! embedded_templates {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../templates/", $name)))),*]
    };
}

/// Each email's three parts (subject, text, HTML) in each language.
macro_rules! embedded_emails {
    ($($name:literal),* $(,)?) => {
        &[$(
            embedded_emails!(@part $name, "en", "subject.txt"),
            embedded_emails!(@part $name, "en", "body.txt"),
            embedded_emails!(@part $name, "en", "body.html"),
            embedded_emails!(@part $name, "zh", "subject.txt"),
            embedded_emails!(@part $name, "zh", "body.txt"),
            embedded_emails!(@part $name, "zh", "body.html"),
        )*]
    };
    (@part $name:literal, $lang:literal, $part:literal) => {
        (
            concat!("email/", $name, "/", $lang, "/", $part),
            include_str!(concat!("../templates/email/", $name, "/", $lang, "/", $part)),
        )
    };
}

const TEMPLATES: &[(&str, &str)] = embedded_templates![
    "errors.html",
    "console/layout.html",
    "console/captcha.html",
    "console/pages/login.html",
    "console/pages/signup.html",
    "console/pages/forgot_password.html",
    "console/pages/reset_password.html",
    "console/pages/dashboard.html",
    "console/pages/keys.html",
    "console/pages/plans.html",
    "console/pages/checkout_return.html",
    "console/pages/billing.html",
    "console/pages/ledger.html",
    "console/pages/usage.html",
    "console/pages/settings.html",
    "console/pages/admin_users.html",
    "console/pages/admin_plans.html",
    "console/pages/admin_providers.html",
    "console/pages/admin_orders.html",
    "console/pages/admin_redemption.html",
];

const EMAILS: &[(&str, &str)] = embedded_emails![
    "email_code",
    "password_reset",
    "password_changed",
    "payment_receipt",
    "payment_failed",
    "subscription_ending",
    "low_balance",
    "new_sign_in",
    "email_changed",
];

pub fn environment() -> &'static Environment<'static> {
    static ENVIRONMENT: OnceLock<Environment<'static>> = OnceLock::new();
    ENVIRONMENT.get_or_init(|| {
        let mut environment = Environment::new();
        environment.add_filter("code", code_spans);
        for (name, source) in TEMPLATES.iter().chain(EMAILS) {
            environment
                .add_template(name, source)
                .expect("every embedded template is valid");
        }
        environment
    })
}

/// Escapes `text` for HTML and turns its `backtick` spans (as the seed writes them) into
/// `<code>` elements.
fn code_spans(text: String) -> minijinja::Value {
    let mut html = String::with_capacity(text.len() + 16);
    for (index, part) in text.split('`').enumerate() {
        let escaped = minijinja::HtmlEscape(part).to_string();
        if index % 2 == 1 {
            html.push_str(&format!("<code>{escaped}</code>"));
        } else {
            html.push_str(&escaped);
        }
    }
    minijinja::Value::from_safe_string(html)
}

#[cfg(test)]
mod tests {
    #[test]
    fn backtick_spans_become_code_and_the_rest_is_escaped() {
        let html = super::code_spans(String::from("Use `data` <b>now</b>")).to_string();
        assert_eq!(html, "Use <code>data</code> &lt;b&gt;now&lt;&#x2f;b&gt;");
    }

    #[test]
    fn every_template_compiles() {
        let environment = super::environment();
        for (name, _) in super::TEMPLATES.iter().chain(super::EMAILS) {
            assert!(environment.get_template(name).is_ok(), "{name}");
        }
    }
}
