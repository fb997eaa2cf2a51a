//! The plans table.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgExecutor, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use super::status::SubscriptionView;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlanType {
    Free,
    OneTime,
    Subscription,
}

impl PlanType {
    pub fn as_str(self) -> &'static str {
        match self {
            PlanType::Free => "free",
            PlanType::OneTime => "one_time",
            PlanType::Subscription => "subscription",
        }
    }

    fn parse(value: &str) -> PlanType {
        match value {
            "one_time" => PlanType::OneTime,
            "subscription" => PlanType::Subscription,
            _ => PlanType::Free,
        }
    }
}

/// A plan with everything the admin sees.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Plan {
    pub id: i64,
    pub name: String,
    pub plan_type: PlanType,
    pub amount_cents: i64,
    pub currency: String,
    /// `month`, `year`, or null for plans that do not renew.
    pub interval: Option<String>,
    pub credits: i64,
    /// Calls per calendar month; null is no quota.
    pub monthly_quota: Option<i64>,
    pub rps_limit: i32,
    pub rph_limit: i32,
    pub description: String,
    pub active: bool,
    pub stripe_price_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A plan as `GET /myapi/plans` shows it.
#[derive(Serialize, ToSchema)]
pub struct PublicPlan {
    pub id: i64,
    pub name: String,
    pub plan_type: PlanType,
    pub amount_cents: i64,
    pub currency: String,
    pub interval: Option<String>,
    pub credits: i64,
    pub monthly_quota: Option<i64>,
    pub rps_limit: i32,
    pub rph_limit: i32,
    pub description: String,
}

impl From<Plan> for PublicPlan {
    fn from(plan: Plan) -> PublicPlan {
        PublicPlan {
            id: plan.id,
            name: plan.name,
            plan_type: plan.plan_type,
            amount_cents: plan.amount_cents,
            currency: plan.currency,
            interval: plan.interval,
            credits: plan.credits,
            monthly_quota: plan.monthly_quota,
            rps_limit: plan.rps_limit,
            rph_limit: plan.rph_limit,
            description: plan.description,
        }
    }
}

struct PlanRow {
    id: i64,
    name: String,
    plan_type: String,
    amount_cents: i64,
    currency: String,
    interval: Option<String>,
    credits: i64,
    monthly_quota: Option<i64>,
    rps_limit: i32,
    rph_limit: i32,
    description: String,
    active: bool,
    stripe_price_id: Option<String>,
    created_at: DateTime<Utc>,
}

impl From<PlanRow> for Plan {
    fn from(row: PlanRow) -> Plan {
        Plan {
            id: row.id,
            name: row.name,
            plan_type: PlanType::parse(&row.plan_type),
            amount_cents: row.amount_cents,
            currency: row.currency,
            interval: row.interval,
            credits: row.credits,
            monthly_quota: row.monthly_quota,
            rps_limit: row.rps_limit,
            rph_limit: row.rph_limit,
            description: row.description,
            active: row.active,
            stripe_price_id: row.stripe_price_id,
            created_at: row.created_at,
        }
    }
}

pub async fn list(pool: &PgPool, only_active: bool) -> Result<Vec<Plan>, sqlx::Error> {
    let rows = sqlx::query_as!(
        PlanRow,
        r#"SELECT id, name, plan_type, amount_cents, currency, interval, credits, monthly_quota,
                  rps_limit, rph_limit, description, active, stripe_price_id, created_at
           FROM plans WHERE active OR NOT $1 ORDER BY amount_cents, id"#,
        only_active
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Plan::from).collect())
}

pub async fn find(executor: impl PgExecutor<'_>, id: i64) -> Result<Option<Plan>, sqlx::Error> {
    let row = sqlx::query_as!(
        PlanRow,
        r#"SELECT id, name, plan_type, amount_cents, currency, interval, credits, monthly_quota,
                  rps_limit, rph_limit, description, active, stripe_price_id, created_at
           FROM plans WHERE id = $1"#,
        id
    )
    .fetch_optional(executor)
    .await?;
    Ok(row.map(Plan::from))
}

/// The plan whose limits apply to an account: its active subscription's (the one that runs
/// longest), else the active free plan; and that subscription.
pub async fn account_plan(
    pool: &PgPool,
    user_id: Uuid,
) -> Result<(Option<Plan>, Option<SubscriptionView>), sqlx::Error> {
    let subscription = sqlx::query!(
        r#"SELECT order_no, plan_id, subscription_status AS "status!", current_period_end,
                  cancel_at_period_end
           FROM orders
           WHERE user_id = $1 AND billing_mode = 'subscription'
             AND subscription_status IN ('active', 'trialing')
           ORDER BY current_period_end DESC NULLS LAST, id DESC LIMIT 1"#,
        user_id
    )
    .fetch_optional(pool)
    .await?;
    if let Some(row) = subscription {
        let plan = find(pool, row.plan_id).await?;
        let view = SubscriptionView {
            order_no: row.order_no,
            status: row.status,
            current_period_end: row.current_period_end,
            cancel_at_period_end: row.cancel_at_period_end,
        };
        return Ok((plan, Some(view)));
    }
    let free = sqlx::query_as!(
        PlanRow,
        r#"SELECT id, name, plan_type, amount_cents, currency, interval, credits, monthly_quota,
                  rps_limit, rph_limit, description, active, stripe_price_id, created_at
           FROM plans WHERE plan_type = 'free' AND active"#
    )
    .fetch_optional(pool)
    .await?;
    Ok((free.map(Plan::from), None))
}
