//! The queries behind a cold call, for many keys or accounts at once (`batch.rs` gathers
//! them): when thousands of quiet accounts make their first call of the day together, each
//! batch of them costs a few queries, not five each.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use sqlx::PgPool;
use uuid::Uuid;

use super::limits::{PlanLimits, month_of, month_start};
use super::reservations::{LeaseTerms, Reserved, reserve_batch, return_grants};
use super::spend_cap::SpendCap;
use crate::auth::users;
use crate::ledger::{self, LeaseRequest};
use crate::plans;

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
#[derive(Clone, Debug)]
pub(super) struct AccountRecord {
    pub frozen: bool,
    pub limits: PlanLimits,
    /// Calls charged in `month` (YYYYMM, the month of the load), as settled.
    pub month_calls: i64,
    pub month: u32,
    /// The account's first lease, reserved with the load when the call that asked knew what it
    /// would cost.
    pub first_lease: Option<Arc<FirstLease>>,
    /// Credits available beyond every lease (after the first one), which size the next
    /// reservation and the `X-Credits-Remaining` of an answer before it.
    pub available: i64,
}

/// A first lease's grant. Every call that a load answered gets the same record, so the grant is
/// taken once: by the wallet the load creates, or by the one that won a race with it.
#[derive(Debug)]
pub(super) struct FirstLease {
    lease_id: Uuid,
    reserved: Reserved,
    taken: AtomicBool,
}

impl FirstLease {
    /// The lease and its grant, to the first caller only.
    pub fn take(&self) -> Option<(Uuid, Reserved)> {
        (!self.taken.swap(true, Ordering::AcqRel)).then_some((self.lease_id, self.reserved))
    }
}

/// A cold account to load, and what the call that asked will cost (0: reserve nothing, as for
/// a reload of the account's status).
pub(super) type AccountLoad = (Uuid, i64);

/// A cold call: the digest of its key, and what it will cost.
pub(super) type KeyLoad = (Vec<u8>, i64);

/// A cold call's key, with its account's load when the account was cold too.
#[derive(Clone, Debug)]
pub(super) struct ColdKey {
    pub key: KeyRecord,
    pub account: Option<AccountRecord>,
}

/// The live keys of `calls` and, for those whose account `is_cold` says this instance has not
/// loaded, the account with its first lease: a cold call on a cold account waits for one batch
/// instead of one for its key and then one for its account.
pub(super) async fn keys_and_accounts(
    pool: &PgPool,
    catalog: &plans::Catalog,
    calls: Vec<KeyLoad>,
    is_cold: impl Fn(Uuid) -> bool,
    now: DateTime<Utc>,
    billing_grace: chrono::Duration,
    terms: LeaseTerms,
) -> Result<HashMap<KeyLoad, ColdKey>, sqlx::Error> {
    let digests: HashSet<&Vec<u8>> = calls.iter().map(|(digest, _)| digest).collect();
    let found = keys(pool, digests.into_iter().cloned().collect()).await?;
    let loads: Vec<AccountLoad> = calls
        .iter()
        .filter_map(|(digest, cost)| Some((found.get(digest)?.user_id, *cost)))
        .filter(|(user_id, _)| is_cold(*user_id))
        .collect();
    let accounts = if loads.is_empty() {
        HashMap::new()
    } else {
        accounts(pool, catalog, loads, now, billing_grace, terms).await?
    };
    Ok(calls
        .into_iter()
        .filter_map(|call| {
            let key = found.get(&call.0)?.clone();
            let account = accounts.get(&(key.user_id, call.1)).cloned();
            Some((call, ColdKey { key, account }))
        })
        .collect())
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

/// The status, plan limits and month's calls of the accounts of `loads` at `now`, and the first
/// lease of each whose call named a cost, reserved at the same time: a cold call waits for one
/// round of queries instead of a load and then a reservation (issue 18). The reservation does
/// not wait for the status: a frozen account's lease goes back, unused, like any idle lease.
/// An account that does not exist, or is not active, is frozen.
pub(super) async fn accounts(
    pool: &PgPool,
    catalog: &plans::Catalog,
    loads: Vec<AccountLoad>,
    now: DateTime<Utc>,
    billing_grace: chrono::Duration,
    terms: LeaseTerms,
) -> Result<HashMap<AccountLoad, AccountRecord>, sqlx::Error> {
    // One lease per account, sized for the dearest call that asked.
    let mut cost_of: HashMap<Uuid, i64> = HashMap::new();
    for &(user_id, cost) in &loads {
        let dearest = cost_of.entry(user_id).or_insert(0);
        *dearest = (*dearest).max(cost);
    }
    let user_ids: Vec<Uuid> = cost_of.keys().copied().collect();
    let leases: Vec<LeaseRequest> = cost_of
        .iter()
        .filter(|(_, cost)| **cost > 0)
        .map(|(user_id, cost)| terms.request(*user_id, terms.first_lease_id(*user_id), 0, *cost))
        .collect();
    let first_leases = async {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        reserve_batch(pool, terms, &leases).await
    };
    let without_lease: Vec<Uuid> = cost_of
        .iter()
        .filter(|(_, cost)| **cost <= 0)
        .map(|(user_id, _)| *user_id)
        .collect();
    let reads = async {
        tokio::try_join!(
            users::active_among(pool, &user_ids),
            crate::payment::account_plans(pool, catalog, &user_ids, now, billing_grace),
            month_calls_of(pool, &user_ids, now),
            async {
                if without_lease.is_empty() {
                    return Ok(HashMap::new());
                }
                ledger::available_among(pool, &without_lease).await
            }
        )
    };
    let (reads, reserved) = tokio::join!(reads, first_leases);
    // A reservation that failed leaves the first call to reserve on its own.
    let reserved = match reserved {
        Ok(reserved) => reserved,
        Err(error) => {
            tracing::warn!(accounts = leases.len(), error = %error,
                "reserving the first leases of cold accounts failed");
            vec![Reserved::NOTHING; leases.len()]
        }
    };
    let (active, plans, calls, available) = match reads {
        Ok(reads) => reads,
        // Without its account no wallet will hold the lease: its grants go back at once.
        Err(error) => {
            let grants: Vec<(Uuid, Uuid, i64)> = leases
                .iter()
                .zip(&reserved)
                .filter(|(_, reserved)| reserved.granted > 0)
                .map(|(lease, reserved)| (lease.user_id, lease.lease_id, reserved.granted))
                .collect();
            if let Err(error) = return_grants(pool, &grants).await {
                tracing::warn!(accounts = grants.len(), error = %error,
                    "returning the first leases of a failed load failed; they end with the lease");
            }
            return Err(error);
        }
    };
    let active: HashSet<Uuid> = active.into_iter().collect();
    let first_lease: HashMap<Uuid, Arc<FirstLease>> = leases
        .iter()
        .zip(reserved)
        .map(|(lease, reserved)| {
            let first = FirstLease {
                lease_id: lease.lease_id,
                reserved,
                taken: AtomicBool::new(false),
            };
            (lease.user_id, Arc::new(first))
        })
        .collect();
    let records: HashMap<Uuid, AccountRecord> = plans
        .into_iter()
        .map(|(user_id, plan)| {
            let record = AccountRecord {
                frozen: !active.contains(&user_id),
                limits: PlanLimits::of(plan),
                month_calls: calls.get(&user_id).copied().unwrap_or(0),
                month: month_of(now),
                first_lease: first_lease.get(&user_id).cloned(),
                available: first_lease.get(&user_id).map_or_else(
                    || available.get(&user_id).copied().unwrap_or(0),
                    |first| first.reserved.available_beyond,
                ),
            };
            (user_id, record)
        })
        .collect();
    Ok(loads
        .into_iter()
        .filter_map(|load| Some((load, records.get(&load.0)?.clone())))
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
