//! The customer's emails about payments, written into the outbox of the webhook's transaction.

use sqlx::PgConnection;

use super::error::PaymentError;
use super::order::Order;
use crate::api::Lang;
use crate::auth::users;
use crate::mail::{Email, outbox};

/// Emails the order's owner, in their language, once the transaction commits.
pub async fn notify(
    connection: &mut PgConnection,
    order: &Order,
    email: Email,
) -> Result<(), PaymentError> {
    if let Some((address, lang)) = users::contact(connection, order.user_id).await? {
        let lang = Lang::parse(&lang).unwrap_or_default();
        outbox::enqueue(connection, &address, lang, &email).await?;
    }
    Ok(())
}

pub async fn send_receipt(
    connection: &mut PgConnection,
    order: &Order,
    amount_paid: i64,
    document_url: Option<&str>,
) -> Result<(), PaymentError> {
    let receipt = Email::PaymentReceipt {
        order_no: order.order_no.clone(),
        amount: printed_amount(amount_paid, &order.currency),
        credits: order.credits,
        document_url: document_url.map(str::to_owned),
    };
    notify(connection, order, receipt).await
}

/// Currencies Stripe counts in whole units (its "zero-decimal currencies"): 500 JPY is ¥500.
const ZERO_DECIMAL: [&str; 16] = [
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
];

/// An amount in Stripe's smallest unit as a person reads it: `29.00 USD`, `500 JPY`.
fn printed_amount(amount: i64, currency: &str) -> String {
    let code = currency.to_uppercase();
    if ZERO_DECIMAL.contains(&currency.to_ascii_lowercase().as_str()) {
        format!("{amount} {code}")
    } else {
        let sign = if amount < 0 { "-" } else { "" };
        let whole = amount.unsigned_abs();
        format!("{sign}{}.{:02} {code}", whole / 100, whole % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::printed_amount;

    #[test]
    fn amounts_are_printed_in_their_currencys_units() {
        assert_eq!(printed_amount(2900, "usd"), "29.00 USD");
        assert_eq!(printed_amount(5, "eur"), "0.05 EUR");
        assert_eq!(printed_amount(500, "jpy"), "500 JPY");
        assert_eq!(printed_amount(12_000, "KRW"), "12000 KRW");
    }
}
