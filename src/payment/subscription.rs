//! The plan whose limits apply to an account, through the subscription it holds.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::order::{self, SubscriptionView};
use crate::plans::{self, Plan};

/// The plan whose limits apply to an account at `now`: its live subscription's (the one that
/// runs longest), else the active free plan; and that subscription. A subscription stays live
/// for `grace` past its period's end when no renewal was heard of (a lost webhook), and for
/// `grace` after it fell past due.
pub async fn account_plan(
    pool: &PgPool,
    user_id: Uuid,
    now: DateTime<Utc>,
    grace: chrono::Duration,
) -> Result<(Option<Plan>, Option<SubscriptionView>), sqlx::Error> {
    if let Some((plan_id, view)) = order::active_subscription(pool, user_id, now - grace).await? {
        return Ok((plans::find(pool, plan_id).await?, Some(view)));
    }
    Ok((plans::active_free(pool).await?, None))
}
