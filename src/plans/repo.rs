//! The plans table.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgExecutor, PgPool};
use utoipa::ToSchema;

/// What a plan sells; stored as text, and an unknown stored value is an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum PlanType {
    Free,
    OneTime,
    Subscription,
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
    /// Whether Checkout takes Stripe promotion codes.
    pub allow_promotion_codes: bool,
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

/// `query_as!(Plan, ..)` with the plan's columns written once; `$tail` follows them.
macro_rules! plan_query {
    ($tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            Plan,
            r#"SELECT id, name, plan_type AS "plan_type: PlanType", amount_cents, currency,
                      interval, credits, monthly_quota, rps_limit, rph_limit, description,
                      active, stripe_price_id, allow_promotion_codes, created_at "# + $tail
            $(, $arg)*
        )
    };
}

pub async fn list(pool: &PgPool, only_active: bool) -> Result<Vec<Plan>, sqlx::Error> {
    plan_query!(
        "FROM plans WHERE active OR NOT $1 ORDER BY amount_cents, id",
        only_active
    )
    .fetch_all(pool)
    .await
}

pub async fn find(executor: impl PgExecutor<'_>, id: i64) -> Result<Option<Plan>, sqlx::Error> {
    plan_query!("FROM plans WHERE id = $1", id)
        .fetch_optional(executor)
        .await
}

/// The plans of `ids` that exist.
pub async fn find_many(
    executor: impl PgExecutor<'_>,
    ids: &[i64],
) -> Result<Vec<Plan>, sqlx::Error> {
    plan_query!("FROM plans WHERE id = ANY($1)", ids)
        .fetch_all(executor)
        .await
}

/// The active free plan, whose limits apply to an account without a subscription.
pub async fn active_free(executor: impl PgExecutor<'_>) -> Result<Option<Plan>, sqlx::Error> {
    plan_query!("FROM plans WHERE plan_type = 'free' AND active")
        .fetch_optional(executor)
        .await
}

/// A plan's fields as the admin sets them.
pub struct PlanFields<'a> {
    pub name: &'a str,
    pub plan_type: PlanType,
    pub amount_cents: i64,
    pub currency: &'a str,
    pub interval: Option<&'a str>,
    pub credits: i64,
    pub monthly_quota: Option<i64>,
    pub rps_limit: i32,
    pub rph_limit: i32,
    pub description: &'a str,
    pub active: bool,
    pub stripe_price_id: Option<&'a str>,
    pub allow_promotion_codes: bool,
}

/// Creates a plan (`id` none) or replaces the fields of plan `id`; `None` when that plan does
/// not exist. One statement for both, so the fields are bound in one place.
pub async fn save(
    pool: &PgPool,
    id: Option<i64>,
    fields: PlanFields<'_>,
) -> Result<Option<Plan>, sqlx::Error> {
    if let Some(id) = id
        && find(pool, id).await?.is_none()
    {
        return Ok(None);
    }
    let id = sqlx::query_scalar!(
        r#"INSERT INTO plans (id, name, plan_type, amount_cents, currency, interval, credits,
                              monthly_quota, rps_limit, rph_limit, description, active,
                              stripe_price_id, allow_promotion_codes)
           OVERRIDING SYSTEM VALUE
           VALUES (COALESCE($1, nextval(pg_get_serial_sequence('plans', 'id'))), $2, $3, $4, $5,
                   $6, $7, $8, $9, $10, $11, $12, $13, $14)
           ON CONFLICT (id) DO UPDATE SET
               (name, plan_type, amount_cents, currency, interval, credits, monthly_quota,
                rps_limit, rph_limit, description, active, stripe_price_id,
                allow_promotion_codes)
             = (EXCLUDED.name, EXCLUDED.plan_type, EXCLUDED.amount_cents, EXCLUDED.currency,
                EXCLUDED.interval, EXCLUDED.credits, EXCLUDED.monthly_quota, EXCLUDED.rps_limit,
                EXCLUDED.rph_limit, EXCLUDED.description, EXCLUDED.active,
                EXCLUDED.stripe_price_id, EXCLUDED.allow_promotion_codes)
           RETURNING id"#,
        id,
        fields.name,
        fields.plan_type as PlanType,
        fields.amount_cents,
        fields.currency,
        fields.interval,
        fields.credits,
        fields.monthly_quota,
        fields.rps_limit,
        fields.rph_limit,
        fields.description,
        fields.active,
        fields.stripe_price_id,
        fields.allow_promotion_codes
    )
    .fetch_one(pool)
    .await?;
    find(pool, id).await
}

/// Deletes a plan, or deactivates it when orders refer to it (their foreign key refuses the
/// delete). `None` when there is no such plan; else whether it was deleted.
pub async fn remove(pool: &PgPool, id: i64) -> Result<Option<bool>, sqlx::Error> {
    let deleted = match sqlx::query!("DELETE FROM plans WHERE id = $1", id)
        .execute(pool)
        .await
    {
        Ok(done) => return Ok((done.rows_affected() == 1).then_some(true)),
        Err(error) if is_foreign_key_violation(&error) => false,
        Err(error) => return Err(error),
    };
    let deactivated = sqlx::query!("UPDATE plans SET active = false WHERE id = $1", id)
        .execute(pool)
        .await?;
    Ok((deactivated.rows_affected() == 1).then_some(deleted))
}

fn is_foreign_key_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|error| error.kind() == sqlx::error::ErrorKind::ForeignKeyViolation)
}
