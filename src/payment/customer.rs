//! One Stripe Customer per user: created at the user's first Checkout or portal visit, passed
//! to every later one, its email kept current. The `billing_customers` table's statements.

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::error::PaymentError;
use super::stripe_api::StripeApi;
use crate::auth::users::Profile;
use crate::state::AppState;

/// The user's Stripe Customer id. A new one is created with an idempotency key of the user and
/// address, so two Checkouts racing for a new user get the same Customer; a changed address is
/// sent to Stripe before the id is used.
pub async fn ensure(
    context: &AppState,
    stripe: &StripeApi,
    user: &Profile,
) -> Result<String, PaymentError> {
    if let Some(known) = find(context, user.id).await? {
        if known.email != user.email {
            stripe
                .update_customer_email(&known.stripe_customer_id, &user.email)
                .await?;
            sqlx::query!(
                "UPDATE billing_customers SET email = $2 WHERE user_id = $1",
                user.id,
                user.email
            )
            .execute(&context.pool)
            .await?;
        }
        return Ok(known.stripe_customer_id);
    }
    let address_digest = hex::encode(&Sha256::digest(user.email.as_bytes())[..8]);
    let key = format!("customer-{}-{address_digest}", user.id);
    let created = stripe.create_customer(user.id, &user.email, &key).await?;
    sqlx::query!(
        r#"INSERT INTO billing_customers (user_id, stripe_customer_id, email) VALUES ($1, $2, $3)
           ON CONFLICT (user_id) DO NOTHING"#,
        user.id,
        created,
        user.email
    )
    .execute(&context.pool)
    .await?;
    // A racing twin may have stored its own first: everyone uses the stored one.
    Ok(find(context, user.id)
        .await?
        .map_or(created, |known| known.stripe_customer_id))
}

struct Known {
    stripe_customer_id: String,
    email: String,
}

async fn find(context: &AppState, user_id: Uuid) -> Result<Option<Known>, sqlx::Error> {
    sqlx::query_as!(
        Known,
        "SELECT stripe_customer_id, email FROM billing_customers WHERE user_id = $1",
        user_id
    )
    .fetch_optional(&context.pool)
    .await
}
