//! What an account's deletion asks of payments: its Stripe subscription cancelled at once (so
//! nothing is billed after), and the link to its Stripe Customer forgotten. Orders and invoices
//! stay for the accounts, under the anonymous tombstone.

use sqlx::PgConnection;
use uuid::Uuid;

use super::error::PaymentError;
use super::order::{self, PaymentProvider};
use super::stripe_api::StripeApi;
use crate::state::AppState;

/// Cancels the account's live Stripe subscription now; the webhooks record the end.
pub async fn cancel_live_subscription(
    context: &AppState,
    stripe: &StripeApi,
    user_id: Uuid,
) -> Result<(), PaymentError> {
    let mut connection = context.pool.acquire().await?;
    let live = order::lock_live_subscription(&mut connection, user_id).await?;
    drop(connection);
    if let Some(order) = live.filter(|order| order.provider == PaymentProvider::Stripe)
        && let Some(subscription_id) = order.stripe_subscription_id.as_deref()
    {
        stripe.cancel_subscription(subscription_id, false).await?;
    }
    Ok(())
}

pub async fn forget_customer(
    connection: &mut PgConnection,
    user_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!("DELETE FROM billing_customers WHERE user_id = $1", user_id)
        .execute(connection)
        .await?;
    Ok(())
}
