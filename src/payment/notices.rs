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
        amount: format!(
            "{}.{:02} {}",
            amount_paid / 100,
            amount_paid % 100,
            order.currency.to_uppercase()
        ),
        credits: order.credits,
        document_url: document_url.map(str::to_owned),
    };
    notify(connection, order, receipt).await
}
