//! Invoices and receipts: each paid Stripe invoice (a subscription's period), each one-time
//! payment and each order paid outside Stripe (manual, or a plan code), with what its grant
//! gave; and every statement on the `invoices`, `stripe_invoice_payments` and `disputes` tables.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};
use utoipa::ToSchema;
use uuid::Uuid;

use super::order::{Order, stored_state};
use crate::api::PageRequest;

stored_state!(
    /// What became of a payment.
    InvoiceStatus { Paid, PartiallyRefunded, Refunded, Disputed }
);

/// A row of `invoices`, as refunds and disputes need it.
#[derive(Clone, Debug)]
pub struct Invoice {
    pub id: i64,
    pub order_id: i64,
    pub user_id: Uuid,
    pub credits_granted: i64,
    pub credits_refunded: i64,
}

/// An invoice as `GET /myapi/invoices` shows it.
#[derive(Serialize, ToSchema)]
pub struct InvoiceView {
    pub id: i64,
    pub order_no: String,
    /// Stripe's invoice number, or the receipt number of a one-time payment.
    pub number: Option<String>,
    pub status: InvoiceStatus,
    pub amount_paid_cents: i64,
    pub currency: String,
    pub period_start: Option<DateTime<Utc>>,
    pub period_end: Option<DateTime<Utc>>,
    pub hosted_invoice_url: Option<String>,
    /// The invoice's PDF, or the receipt of a one-time payment.
    pub pdf_url: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Whose invoice it is; in the admins' list only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
}

/// A paid invoice or one-time payment, as the webhook that reports it describes it.
pub struct NewInvoice<'a> {
    pub order: &'a Order,
    pub stripe_invoice_id: Option<&'a str>,
    pub stripe_payment_intent_id: Option<&'a str>,
    pub number: Option<&'a str>,
    pub amount_paid_cents: i64,
    pub currency: &'a str,
    pub period_start: Option<DateTime<Utc>>,
    pub period_end: Option<DateTime<Utc>>,
    pub hosted_invoice_url: Option<&'a str>,
    pub pdf_url: Option<&'a str>,
    /// What the payment's grant gave.
    pub credits_granted: i64,
    pub created_at: DateTime<Utc>,
}

/// Records a paid invoice or payment once (a redelivery finds it), with what its grant gave;
/// false when it was recorded before. A subscription invoice takes the
/// payment intent `invoice_payment.paid` reported, if that event came first.
pub async fn record(
    connection: &mut PgConnection,
    new: NewInvoice<'_>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query!(
        r#"INSERT INTO invoices (order_id, user_id, stripe_invoice_id, stripe_payment_intent_id,
                                 number, status, amount_paid_cents, currency, period_start,
                                 period_end, hosted_invoice_url, pdf_url, credits_granted,
                                 created_at)
           VALUES ($1, $2, $3,
                   COALESCE($4, (SELECT stripe_payment_intent_id FROM stripe_invoice_payments
                                 WHERE stripe_invoice_id = $3 LIMIT 1)),
                   $5, 'paid', $6, $7, $8, $9, $10, $11, $12, $13)
           ON CONFLICT DO NOTHING"#,
        new.order.id,
        new.order.user_id,
        new.stripe_invoice_id,
        new.stripe_payment_intent_id,
        new.number,
        new.amount_paid_cents,
        new.currency,
        new.period_start,
        new.period_end,
        new.hosted_invoice_url,
        new.pdf_url,
        new.credits_granted,
        new.created_at
    )
    .execute(connection)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Remembers which invoice a payment intent paid (`invoice_payment.paid`).
pub async fn record_invoice_payment(
    connection: &mut PgConnection,
    payment_intent_id: &str,
    invoice_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"INSERT INTO stripe_invoice_payments (stripe_payment_intent_id, stripe_invoice_id)
           VALUES ($1, $2) ON CONFLICT DO NOTHING"#,
        payment_intent_id,
        invoice_id
    )
    .execute(&mut *connection)
    .await?;
    sqlx::query!(
        r#"UPDATE invoices SET stripe_payment_intent_id = $1
           WHERE stripe_invoice_id = $2 AND stripe_payment_intent_id IS NULL"#,
        payment_intent_id,
        invoice_id
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// The receipt of a one-time payment (`charge.succeeded`), where its charge reports one.
pub async fn record_receipt(
    connection: &mut PgConnection,
    payment_intent_id: &str,
    receipt_url: Option<&str>,
    receipt_number: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE invoices SET pdf_url = COALESCE(pdf_url, $2), number = COALESCE(number, $3)
           WHERE stripe_payment_intent_id = $1 AND stripe_invoice_id IS NULL"#,
        payment_intent_id,
        receipt_url,
        receipt_number
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Locks the invoice or payment a payment intent paid.
pub async fn lock_by_payment_intent(
    connection: &mut PgConnection,
    payment_intent_id: &str,
) -> Result<Option<Invoice>, sqlx::Error> {
    sqlx::query_as!(
        Invoice,
        r#"SELECT id, order_id, user_id, credits_granted, credits_refunded
           FROM invoices
           WHERE stripe_payment_intent_id = $1
              OR stripe_invoice_id = (SELECT stripe_invoice_id FROM stripe_invoice_payments
                                      WHERE stripe_payment_intent_id = $1)
           ORDER BY id LIMIT 1
           FOR UPDATE"#,
        payment_intent_id
    )
    .fetch_optional(connection)
    .await
}

/// Locks an invoice by its id.
pub async fn lock_by_id(connection: &mut PgConnection, id: i64) -> Result<Invoice, sqlx::Error> {
    sqlx::query_as!(
        Invoice,
        r#"SELECT id, order_id, user_id, credits_granted, credits_refunded
           FROM invoices WHERE id = $1 FOR UPDATE"#,
        id
    )
    .fetch_one(connection)
    .await
}

/// Records how many of the invoice's credits refunds and disputes have taken back, and its
/// status.
pub async fn set_taken_back(
    connection: &mut PgConnection,
    id: i64,
    credits_refunded: i64,
    status: InvoiceStatus,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE invoices SET credits_refunded = $2, status = $3 WHERE id = $1",
        id,
        credits_refunded,
        status as InvoiceStatus
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Invoices newest first: one user's, or everyone's (with their owner) when `user_id` is None.
pub async fn list(
    executor: impl PgExecutor<'_>,
    user_id: Option<Uuid>,
    page: PageRequest,
) -> Result<Vec<InvoiceView>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT i.id, o.order_no, i.number, i.status AS "status: InvoiceStatus",
                  i.amount_paid_cents, i.currency, i.period_start, i.period_end,
                  i.hosted_invoice_url, i.pdf_url, i.created_at, i.user_id
           FROM invoices i JOIN orders o ON o.id = i.order_id
           WHERE $1::uuid IS NULL OR i.user_id = $1
           ORDER BY i.id DESC LIMIT $2 OFFSET $3"#,
        user_id,
        page.limit(),
        page.offset()
    )
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| InvoiceView {
            id: row.id,
            order_no: row.order_no,
            number: row.number,
            status: row.status,
            amount_paid_cents: row.amount_paid_cents,
            currency: row.currency,
            period_start: row.period_start,
            period_end: row.period_end,
            hosted_invoice_url: row.hosted_invoice_url,
            pdf_url: row.pdf_url,
            created_at: row.created_at,
            user_id: user_id.is_none().then_some(row.user_id),
        })
        .collect())
}

pub async fn count(
    executor: impl PgExecutor<'_>,
    user_id: Option<Uuid>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM invoices WHERE $1::uuid IS NULL OR user_id = $1"#,
        user_id
    )
    .fetch_one(executor)
    .await
}

/// Records a dispute opened on `payment`; false when it was recorded before.
pub async fn open_dispute(
    connection: &mut PgConnection,
    dispute_id: &str,
    payment: &Invoice,
    credits_taken: i64,
    shortfall: i64,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query!(
        r#"INSERT INTO disputes (stripe_dispute_id, invoice_id, user_id, status, credits_taken,
                                 shortfall, created_at)
           VALUES ($1, $2, $3, 'open', $4, $5, $6)
           ON CONFLICT (stripe_dispute_id) DO NOTHING"#,
        dispute_id,
        payment.id,
        payment.user_id,
        credits_taken,
        shortfall,
        now
    )
    .execute(connection)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// An open dispute, closed now.
pub struct ClosedDispute {
    pub invoice_id: i64,
    pub credits_taken: i64,
    pub shortfall: i64,
}

/// Closes an open dispute as won or lost; None when there is no such open dispute (never
/// opened here, or closed before).
pub async fn close_dispute(
    connection: &mut PgConnection,
    dispute_id: &str,
    won: bool,
    now: DateTime<Utc>,
) -> Result<Option<ClosedDispute>, sqlx::Error> {
    sqlx::query_as!(
        ClosedDispute,
        r#"UPDATE disputes SET status = CASE WHEN $2 THEN 'won' ELSE 'lost' END, closed_at = $3
           WHERE stripe_dispute_id = $1 AND status = 'open'
           RETURNING invoice_id, credits_taken, shortfall"#,
        dispute_id,
        won,
        now
    )
    .fetch_optional(connection)
    .await
}

/// Whether a dispute is still open: of the order's payments, or of any payment of the user
/// when `order_id` is None.
pub async fn has_open_dispute(
    connection: &mut PgConnection,
    order_id: Option<i64>,
    user_id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (
               SELECT 1 FROM disputes d JOIN invoices i ON i.id = d.invoice_id
               WHERE d.user_id = $2 AND d.status = 'open'
                 AND ($1::bigint IS NULL OR i.order_id = $1)) AS "open!""#,
        order_id,
        user_id
    )
    .fetch_one(connection)
    .await
}
