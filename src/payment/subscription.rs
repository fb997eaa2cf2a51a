//! The plan whose limits apply to an account, through the subscription it holds.

use std::collections::HashMap;

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

/// `account_plan` for many accounts at once (the gateway's loads and reloads of the accounts it
/// holds): one query whatever their number, and the plans from `catalog`.
pub async fn account_plans(
    pool: &PgPool,
    catalog: &plans::Catalog,
    users: &[Uuid],
    now: DateTime<Utc>,
    grace: chrono::Duration,
) -> Result<HashMap<Uuid, Option<Plan>>, sqlx::Error> {
    let subscribed = order::active_subscription_plans(pool, users, now - grace).await?;
    let mut plan_ids: Vec<i64> = subscribed.values().copied().collect();
    plan_ids.sort_unstable();
    plan_ids.dedup();
    let (plans_by_id, free) = catalog.plans(pool, &plan_ids).await?;
    Ok(users
        .iter()
        .map(|user_id| {
            let plan = match subscribed.get(user_id) {
                Some(plan_id) => plans_by_id.get(plan_id).cloned().flatten(),
                None => free.clone(),
            };
            (*user_id, plan)
        })
        .collect())
}
