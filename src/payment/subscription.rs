//! The plan whose limits apply to an account, through the subscription it holds.

use sqlx::PgPool;
use uuid::Uuid;

use super::order::{self, SubscriptionView};
use crate::plans::{self, Plan};

/// The plan whose limits apply to an account: its active subscription's (the one that runs
/// longest), else the active free plan; and that subscription.
pub async fn account_plan(
    pool: &PgPool,
    user_id: Uuid,
) -> Result<(Option<Plan>, Option<SubscriptionView>), sqlx::Error> {
    if let Some((plan_id, view)) = order::active_subscription(pool, user_id).await? {
        return Ok((plans::find(pool, plan_id).await?, Some(view)));
    }
    Ok((plans::active_free(pool).await?, None))
}
