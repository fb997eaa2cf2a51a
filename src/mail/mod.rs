//! Outgoing email: lettre's async SMTP transport for `SMTP_URL` (STARTTLS by default, implicit
//! TLS with `smtps://`, none with `?tls=none`; `SMTP_CA_FILE` adds trusted roots), or `.eml`
//! files under `DATA_DIR/mail` when it is unset. Every message has a subject, a text part and
//! an HTML part rendered from `templates/email/<name>/<lang>/`.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use minijinja::context;
use percent_encoding::percent_decode_str;
use secrecy::ExposeSecret;
use url::Url;

use crate::api::Lang;
use crate::config::Settings;
use crate::telemetry::mask_email;

pub mod outbox;

/// The messages the service sends. Serialised into the outbox (`outbox.rs`) when written inside
/// a transaction.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "template", rename_all = "snake_case")]
pub enum Email {
    /// The registration code.
    Code { code: String, minutes: i64 },
    /// The link that lets a user choose a new password.
    PasswordReset { link: String, minutes: i64 },
    /// The notice that the password was changed or reset.
    PasswordChanged,
    /// A payment arrived: an order, or a subscription's period.
    PaymentReceipt {
        order_no: String,
        /// The amount as printed, `29.00 USD`.
        amount: String,
        credits: i64,
        /// The invoice or receipt, when Stripe has one.
        document_url: Option<String>,
    },
    /// A subscription's renewal could not be charged.
    PaymentFailed { order_no: String, grace_days: i64 },
    /// A subscription will end at the end of its period.
    SubscriptionEnding { order_no: String, ends_on: String },
    /// The credits fell below the threshold the user set.
    LowBalance { credits: i64, threshold: i64 },
    /// The account's address changed (sent to the old one; the new one is shown masked).
    EmailChanged { new_email: String },
    /// A sign-in from an address and browser the account had not used for 90 days.
    NewSignIn {
        ip: String,
        user_agent: String,
        at: String,
    },
}

impl Email {
    fn template(&self) -> &'static str {
        match self {
            Email::Code { .. } => "email_code",
            Email::PasswordReset { .. } => "password_reset",
            Email::PasswordChanged => "password_changed",
            Email::PaymentReceipt { .. } => "payment_receipt",
            Email::PaymentFailed { .. } => "payment_failed",
            Email::SubscriptionEnding { .. } => "subscription_ending",
            Email::LowBalance { .. } => "low_balance",
            Email::NewSignIn { .. } => "new_sign_in",
            Email::EmailChanged { .. } => "email_changed",
        }
    }

    fn context(&self) -> minijinja::Value {
        match self {
            Email::Code { code, minutes } => context! { code, minutes },
            Email::PasswordReset { link, minutes } => context! { link, minutes },
            Email::PasswordChanged => context! {},
            Email::PaymentReceipt {
                order_no,
                amount,
                credits,
                document_url,
            } => context! { order_no, amount, credits, document_url },
            Email::PaymentFailed {
                order_no,
                grace_days,
            } => context! { order_no, grace_days },
            Email::SubscriptionEnding { order_no, ends_on } => context! { order_no, ends_on },
            Email::LowBalance { credits, threshold } => context! { credits, threshold },
            Email::NewSignIn { ip, user_agent, at } => context! { ip, user_agent, at },
            Email::EmailChanged { new_email } => context! { new_email },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("the recipient address is not valid")]
    Recipient,
    #[error("the message could not be built: {0}")]
    Build(String),
    #[error("the mail transport failed: {0}")]
    Transport(String),
    #[error("the mail transport did not answer within {0:?}")]
    Timeout(Duration),
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Files(AsyncFileTransport<Tokio1Executor>),
}

pub struct Mailer {
    transport: Transport,
    from: Mailbox,
    timeout: Duration,
}

impl Mailer {
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Mailer> {
        let from: Mailbox = settings
            .mail_from
            .parse()
            .map_err(|_| anyhow::anyhow!("MAIL_FROM is not a valid address"))?;
        let timeout = settings.mail_timeout;
        let transport = match &settings.smtp_url {
            Some(url) => Transport::Smtp(smtp_transport(
                url.expose_secret(),
                settings.smtp_ca_pem.as_deref(),
                timeout,
            )?),
            None => {
                let dir = settings.data_dir.join("mail");
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create the mailbox {}", dir.display()))?;
                Transport::Files(AsyncFileTransport::new(Path::new(&dir)))
            }
        };
        Ok(Mailer {
            transport,
            from,
            timeout,
        })
    }

    /// Renders and sends `email` to `to`, in `lang`. Gives up after the mail timeout, so a
    /// hanging server is an answer (50011) and not a hung request.
    pub async fn send(&self, to: &str, email: Email, lang: Lang) -> Result<(), MailError> {
        let message = self.build(to, &email, lang)?;
        let sending = async {
            match &self.transport {
                Transport::Smtp(smtp) => smtp
                    .send(message)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string()),
                Transport::Files(files) => files
                    .send(message)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string()),
            }
        };
        let outcome = match tokio::time::timeout(self.timeout, sending).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(MailError::Transport(error)),
            Err(_) => Err(MailError::Timeout(self.timeout)),
        };
        match &outcome {
            Ok(()) => {
                tracing::info!(to = %mask_email(to), template = email.template(), "email sent")
            }
            Err(error) => tracing::warn!(to = %mask_email(to), template = email.template(),
                error = %error, "email not sent"),
        }
        outcome
    }

    fn build(&self, to: &str, email: &Email, lang: Lang) -> Result<Message, MailError> {
        let to: Mailbox = to.parse().map_err(|_| MailError::Recipient)?;
        let lang_dir = match lang {
            Lang::En => "en",
            Lang::Zh => "zh",
        };
        let render = |part: &str| {
            let name = format!("email/{}/{lang_dir}/{part}", email.template());
            crate::templates::environment()
                .get_template(&name)
                .and_then(|template| template.render(email.context()))
                .map_err(|error| MailError::Build(error.to_string()))
        };
        let subject = render("subject.txt")?;
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject.trim())
            .multipart(MultiPart::alternative_plain_html(
                render("body.txt")?,
                render("body.html")?,
            ))
            .map_err(|error| MailError::Build(error.to_string()))
    }
}

/// `smtp://user:pass@host:port` (STARTTLS required, port 587 by default),
/// `smtps://user:pass@host:port` (implicit TLS, 465), `smtp://host:port?tls=none` (plain, 25).
/// TLS checks the server's certificate against the URL's host, trusting the built-in roots plus
/// the certificates of `SMTP_CA_FILE` (`ca_pem`).
fn smtp_transport(
    value: &str,
    ca_pem: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<AsyncSmtpTransport<Tokio1Executor>> {
    let url = Url::parse(value).context("SMTP_URL is not a URL")?;
    let host = url.host_str().context("SMTP_URL has no host")?;
    let plain = url
        .query_pairs()
        .any(|(key, value)| key == "tls" && value == "none");
    let tls = || -> anyhow::Result<TlsParameters> {
        let mut parameters = TlsParameters::builder(host.to_owned());
        if let Some(pem) = ca_pem {
            let certificates = Certificate::from_pem(pem.as_bytes())
                .context("SMTP_CA_FILE: the PEM certificates cannot be parsed")?;
            parameters = parameters.add_root_certificate(certificates);
        }
        parameters.build().context("SMTP_URL: TLS setup failed")
    };
    // `builder_dangerous` is only lettre's name for "no TLS yet": both TLS modes set it below,
    // as its `relay` and `starttls_relay` do, but with our roots.
    let builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host);
    let builder = match (url.scheme(), plain) {
        ("smtps", _) => builder
            .port(url.port().unwrap_or(465))
            .tls(Tls::Wrapper(tls()?)),
        ("smtp", true) => builder.port(url.port().unwrap_or(25)),
        // `Required`: no credentials or mail go out unless the STARTTLS upgrade succeeds.
        ("smtp", false) => builder
            .port(url.port().unwrap_or(587))
            .tls(Tls::Required(tls()?)),
        (other, _) => anyhow::bail!("SMTP_URL: unsupported scheme {other}"),
    };
    let builder = if url.username().is_empty() {
        builder
    } else {
        let decode = |text: &str| percent_decode_str(text).decode_utf8_lossy().into_owned();
        builder.credentials(Credentials::new(
            decode(url.username()),
            decode(url.password().unwrap_or_default()),
        ))
    };
    Ok(builder.timeout(Some(timeout)).build())
}
