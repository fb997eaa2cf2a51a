//! The queries behind a cold call, for many keys or accounts at once (`batch.rs` gathers
//! them): when thousands of quiet accounts make their first call of the day together, each
//! batch of them costs a few queries, not five each.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use sqlx::PgPool;
use uuid::Uuid;

use super::limits::{PlanLimits, month_of, month_start};
use super::spend_cap::SpendCap;
use crate::auth::users;
use crate::ledger;

/// A live key as one of its secrets finds it.
#[derive(Clone, Debug)]
pub(super) struct KeyRecord {
    pub key_id: Uuid,
    pub user_id: Uuid,
    /// Unix seconds.
    pub last_used: i64,
    /// When this secret stops being accepted (unix seconds): the key's expiry, or for a rotated
    /// key's previous secret the end of its grace.
    pub expires_at: Option<i64>,
    pub rps: Option<u32>,
    pub providers: Option<Vec<String>>,
    pub allowed_ips: Option<Vec<IpNet>>,
    pub spend_cap: Option<SpendCap>,
    /// `changed_at` of the row (microseconds).
    pub changed_at: i64,
}

/// What a cold account's first call needs from PostgreSQL.
#[derive(Clone, Copy, Debug)]
pub(super) struct AccountRecord {
    pub frozen: bool,
    pub limits: PlanLimits,
    /// Calls charged in `month` (YYYYMM, the month of the load), as settled.
    pub month_calls: i64,
    pub month: u32,
    /// Credits available beyond every lease at the load: they size the first reservation.
    pub available: i64,
}

/// The live keys whose secret, or previous secret within its rotation's grace, has one of
/// `digests`, by digest. Revoked and unknown digests are absent.
pub(super) async fn keys(
    pool: &PgPool,
    digests: Vec<Vec<u8>>,
) -> Result<HashMap<Vec<u8>, KeyRecord>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT id, user_id, key_hash, previous_key_hash,
                  COALESCE(extract(epoch FROM last_used_at)::bigint, 0) AS "last_used!",
                  extract(epoch FROM expires_at)::bigint AS expires_at,
                  extract(epoch FROM previous_expires_at)::bigint AS previous_expires_at,
                  rps_limit, providers, allowed_ips, spend_cap_credits, spend_cap_period,
                  (extract(epoch FROM changed_at) * 1000000)::bigint AS "changed_at!"
           FROM api_keys
           WHERE (key_hash = ANY($1) OR previous_key_hash = ANY($1)) AND revoked_at IS NULL"#,
        &digests
    )
    .fetch_all(pool)
    .await?;
    let asked: HashSet<&[u8]> = digests.iter().map(Vec::as_slice).collect();
    let mut found = HashMap::new();
    for row in rows {
        // A previous secret lives until its grace ends (and never past the key's own expiry).
        let previous_until = row.previous_expires_at.unwrap_or(0);
        let previous_expiry = Some(
            row.expires_at
                .map_or(previous_until, |at| at.min(previous_until)),
        );
        let record = KeyRecord {
            key_id: row.id,
            user_id: row.user_id,
            last_used: row.last_used,
            expires_at: row.expires_at,
            rps: row.rps_limit.and_then(|rps| u32::try_from(rps).ok()),
            providers: row.providers,
            allowed_ips: row.allowed_ips.map(|networks| {
                networks
                    .iter()
                    .filter_map(|network| network.parse::<IpNet>().ok())
                    .collect()
            }),
            spend_cap: SpendCap::from_columns(
                row.spend_cap_credits,
                row.spend_cap_period.as_deref(),
            ),
            changed_at: row.changed_at,
        };
        if let Some(previous) = row
            .previous_key_hash
            .filter(|d| asked.contains(d.as_slice()))
        {
            let expires_at = previous_expiry;
            found.insert(
                previous,
                KeyRecord {
                    expires_at,
                    ..record.clone()
                },
            );
        }
        if asked.contains(row.key_hash.as_slice()) {
            found.insert(row.key_hash, record);
        }
    }
    Ok(found)
}

/// The status, plan limits and month's calls of `user_ids` at `now`; an account that does not
/// exist, or is not active, is frozen.
pub(super) async fn accounts(
    pool: &PgPool,
    user_ids: Vec<Uuid>,
    now: DateTime<Utc>,
    billing_grace: chrono::Duration,
) -> Result<HashMap<Uuid, AccountRecord>, sqlx::Error> {
    let (active, plans, calls, available) = tokio::try_join!(
        users::active_among(pool, &user_ids),
        crate::payment::account_plans(pool, &user_ids, now, billing_grace),
        month_calls_of(pool, &user_ids, now),
        ledger::available_among(pool, &user_ids)
    )?;
    let active: HashSet<Uuid> = active.into_iter().collect();
    Ok(plans
        .into_iter()
        .map(|(user_id, plan)| {
            let record = AccountRecord {
                frozen: !active.contains(&user_id),
                limits: PlanLimits::of(plan),
                month_calls: calls.get(&user_id).copied().unwrap_or(0),
                month: month_of(now),
                available: available.get(&user_id).copied().unwrap_or(0),
            };
            (user_id, record)
        })
        .collect())
}

/// Calls charged in the calendar month (UTC) of `now`, as settled in PostgreSQL.
pub async fn month_calls(
    pool: &PgPool,
    user_id: Uuid,
    now: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    let calls = month_calls_of(pool, &[user_id], now).await?;
    Ok(calls.get(&user_id).copied().unwrap_or(0))
}

/// Calls charged in the calendar month (UTC) of `now`, as settled, of each of `user_ids` that
/// made any.
async fn month_calls_of(
    pool: &PgPool,
    user_ids: &[Uuid],
    now: DateTime<Utc>,
) -> Result<HashMap<Uuid, i64>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT user_id, COALESCE(sum(calls), 0)::bigint AS "calls!" FROM usage_hourly
           WHERE user_id = ANY($1) AND hour >= $2 GROUP BY user_id"#,
        user_ids,
        month_start(now)
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.user_id, row.calls))
        .collect())
}
