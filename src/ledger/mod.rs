//! Credits: an account balance and the append-only ledger that explains it. Every movement has
//! a unique idempotency key and moves the balance in the same transaction under the account's
//! row lock, so a movement happens once whatever the retries, and `sum(entries) == balance`.

mod routes;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::api::ApiError;

pub use routes::{LedgerApi, configure};

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("the balance ({balance}) cannot cover {amount}")]
    InsufficientBalance { balance: i64, amount: i64 },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A settlement's COMMIT went unanswered and PostgreSQL was not asked yet whether it took
    /// effect: the account's leases are not touched until it is (`gateway::unconfirmed`).
    #[error("whether a settlement committed is not known yet")]
    OutcomeUnknown,
}

impl From<LedgerError> for ApiError {
    /// A database failure keeps its meaning (an outage is a 503); a balance that cannot cover a
    /// movement reaching a handler unhandled is a bug; an unknown outcome is a short outage.
    fn from(error: LedgerError) -> Self {
        match error {
            LedgerError::Database(error) => ApiError::from(error),
            // Known at the next settlement tick: a second at most.
            LedgerError::OutcomeUnknown => ApiError::unavailable(1),
            other => ApiError::internal(other),
        }
    }
}

/// One movement of credits.
pub struct Movement<'a> {
    pub user_id: Uuid,
    /// Positive adds credits, negative takes them.
    pub amount: i64,
    /// What kind of movement: `order`, `invoice`, `usage`, `adjustment`, `refund`.
    pub reason: &'a str,
    /// What it refers to (an order number, an invoice id), shown to the user.
    pub reference: Option<&'a str>,
    /// Unique per movement: a second movement with the same key is not applied.
    pub key: &'a str,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    Recorded {
        balance_after: i64,
    },
    /// The key was used before: nothing changed.
    AlreadyRecorded,
}

/// Applies `movement` inside the caller's transaction. A movement that would take the balance
/// below zero is refused and changes nothing.
pub async fn apply(
    connection: &mut PgConnection,
    movement: Movement<'_>,
    now: DateTime<Utc>,
) -> Result<Applied, LedgerError> {
    let (balance, reserved) = lock_account(connection, movement.user_id).await?;
    let seen = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM ledger_entries WHERE idempotency_key = $1) AS "seen!""#,
        movement.key
    )
    .fetch_one(&mut *connection)
    .await?;
    if seen {
        return Ok(Applied::AlreadyRecorded);
    }
    if movement.amount == 0 {
        return Ok(Applied::Recorded {
            balance_after: balance,
        });
    }
    // Checked: a balance that would overflow is refused like one that would go negative.
    let Some(balance_after) = balance.checked_add(movement.amount) else {
        return Err(LedgerError::InsufficientBalance {
            balance: balance - reserved,
            amount: movement.amount,
        });
    };
    // Credits reserved by a gateway lease are spoken for: only the rest can be taken.
    if balance_after < reserved {
        return Err(LedgerError::InsufficientBalance {
            balance: balance - reserved,
            amount: movement.amount,
        });
    }
    sqlx::query!(
        r#"INSERT INTO ledger_entries
               (user_id, amount, balance_after, reason, reference, idempotency_key, created_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7)"#,
        movement.user_id,
        movement.amount,
        balance_after,
        movement.reason,
        movement.reference,
        movement.key,
        now
    )
    .execute(&mut *connection)
    .await?;
    sqlx::query!(
        "UPDATE credit_accounts SET balance = $2 WHERE user_id = $1",
        movement.user_id,
        balance_after
    )
    .execute(&mut *connection)
    .await?;
    Ok(Applied::Recorded { balance_after })
}

/// Takes up to `wanted` credits (never below zero) and returns how many were taken.
pub async fn take_up_to(
    connection: &mut PgConnection,
    movement: Movement<'_>,
    now: DateTime<Utc>,
) -> Result<i64, LedgerError> {
    let wanted = -movement.amount;
    let (balance, reserved) = lock_account(connection, movement.user_id).await?;
    let taken = wanted.clamp(0, balance - reserved);
    let applied = apply(
        connection,
        Movement {
            amount: -taken,
            ..movement
        },
        now,
    )
    .await?;
    Ok(if applied == Applied::AlreadyRecorded {
        0
    } else {
        taken
    })
}

/// Creates the account row when missing and locks it; returns the balance and the reserve.
/// Every transaction that touches an account's credits or its leases takes this lock first,
/// so they never wait on each other in opposite orders.
pub async fn lock_account(
    connection: &mut PgConnection,
    user_id: Uuid,
) -> Result<(i64, i64), LedgerError> {
    sqlx::query!(
        "INSERT INTO credit_accounts (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING",
        user_id
    )
    .execute(&mut *connection)
    .await?;
    let row = sqlx::query!(
        "SELECT balance, reserved FROM credit_accounts WHERE user_id = $1 FOR UPDATE",
        user_id
    )
    .fetch_one(&mut *connection)
    .await?;
    Ok((row.balance, row.reserved))
}

/// A gateway lease's reservation: the account, the lease that records it, the credits wanted,
/// up to `plenty` when the account has sixty-four times that available (sized here, by the
/// balance under the lock, so a caller needs no earlier read of it), and the fewest worth
/// granting.
pub struct LeaseRequest {
    pub user_id: Uuid,
    pub lease_id: Uuid,
    pub wanted: i64,
    pub plenty: i64,
    pub minimum: i64,
}

/// Sets aside available credits for gateway leases, for many accounts at once (issue 18: the
/// gateway's cold accounts, one statement for all), and records each grant in its lease row
/// (`credit_leases`, created or grown, expiring `ttl_secs` from now). The answers, in the
/// requests' order, are what was granted (`wanted`, or up to `plenty` when a 64th of the
/// available credits is more; never more than available; at least `minimum`, else nothing) and
/// what stays available beyond it.
///
/// One statement, so one round trip and its own commit: the six round trips of a transaction
/// (begin, lock, update, lease rows, commit) were about half of a lone cold call's wait.
/// The reserve and the lease rows that explain it still change together or not at all. The
/// accounts are locked in id order, like every batch on credits, so two batches never wait on
/// each other in a cycle. Each account appears at most once.
pub async fn reserve_into_leases(
    pool: &PgPool,
    instance_id: Uuid,
    ttl_secs: f64,
    requests: &[LeaseRequest],
) -> Result<Vec<(i64, i64)>, LedgerError> {
    let users: Vec<Uuid> = requests.iter().map(|request| request.user_id).collect();
    let leases: Vec<Uuid> = requests.iter().map(|request| request.lease_id).collect();
    let wanted: Vec<i64> = requests.iter().map(|request| request.wanted).collect();
    let plenty: Vec<i64> = requests.iter().map(|request| request.plenty).collect();
    let minimum: Vec<i64> = requests.iter().map(|request| request.minimum).collect();
    let granted: std::collections::HashMap<Uuid, (i64, i64)> = sqlx::query!(
        r#"WITH requested AS (
               SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::bigint[],
                                    $5::bigint[])
                   AS r(user_id, lease_id, wanted, plenty, minimum)
           ),
           locked AS MATERIALIZED (
               SELECT a.user_id, a.balance - a.reserved AS available
               FROM credit_accounts a WHERE a.user_id = ANY($1)
               ORDER BY a.user_id FOR UPDATE
           ),
           granted AS MATERIALIZED (
               SELECT r.user_id, r.lease_id, l.available,
                      CASE WHEN s.size >= GREATEST(r.minimum, 1) THEN s.size ELSE 0 END AS amount
               FROM requested r JOIN locked l ON l.user_id = r.user_id,
                    LATERAL (SELECT LEAST(GREATEST(r.wanted, LEAST(l.available / 64, r.plenty)),
                                          l.available) AS size) s
           ),
           moved AS (
               UPDATE credit_accounts a SET reserved = a.reserved + g.amount
               FROM granted g WHERE a.user_id = g.user_id AND g.amount > 0
           ),
           leased AS (
               INSERT INTO credit_leases (id, user_id, instance_id, amount, expires_at)
               SELECT g.lease_id, g.user_id, $6, g.amount, now() + make_interval(secs => $7)
               FROM granted g WHERE g.amount > 0
               ON CONFLICT (id) DO UPDATE SET amount = credit_leases.amount + EXCLUDED.amount,
                                              expires_at = EXCLUDED.expires_at
           )
           SELECT user_id AS "user_id!", amount AS "granted!",
                  available - amount AS "available_beyond!"
           FROM granted"#,
        &users,
        &leases,
        &wanted,
        &plenty,
        &minimum,
        instance_id,
        ttl_secs
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|row| (row.user_id, (row.granted, row.available_beyond)))
    .collect();
    // An account without a credit row has nothing to reserve.
    Ok(users
        .iter()
        .map(|user_id| granted.get(user_id).copied().unwrap_or((0, 0)))
        .collect())
}

/// Gives reserved credits back to the available ones.
pub async fn unreserve(
    connection: &mut PgConnection,
    user_id: Uuid,
    amount: i64,
) -> Result<(), LedgerError> {
    sqlx::query!(
        "UPDATE credit_accounts SET reserved = GREATEST(reserved - $2, 0) WHERE user_id = $1",
        user_id,
        amount
    )
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// `unreserve` for many accounts at once (the gateway's leases returned on shutdown); each
/// account at most once, its row locked by the caller.
pub async fn unreserve_many(
    connection: &mut PgConnection,
    amounts: &[(Uuid, i64)],
) -> Result<(), LedgerError> {
    if amounts.is_empty() {
        return Ok(());
    }
    let (users, amounts): (Vec<Uuid>, Vec<i64>) = amounts.iter().copied().unzip();
    sqlx::query!(
        r#"UPDATE credit_accounts a SET reserved = GREATEST(a.reserved - r.amount, 0)
           FROM unnest($1::uuid[], $2::bigint[]) AS r(user_id, amount)
           WHERE a.user_id = r.user_id"#,
        &users,
        &amounts
    )
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Charges `spent` reserved credits: one usage entry, and the balance and the reserve fall
/// together, so the available credits do not move.
pub async fn charge_reserved(
    connection: &mut PgConnection,
    user_id: Uuid,
    spent: i64,
    reference: &str,
    key: &str,
    now: DateTime<Utc>,
) -> Result<Applied, LedgerError> {
    let (balance, reserved) = lock_account(connection, user_id).await?;
    let spent = spent.min(reserved);
    let seen = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM ledger_entries WHERE idempotency_key = $1) AS "seen!""#,
        key
    )
    .fetch_one(&mut *connection)
    .await?;
    if seen || spent <= 0 {
        return Ok(Applied::AlreadyRecorded);
    }
    let balance_after = balance - spent;
    sqlx::query!(
        r#"INSERT INTO ledger_entries
               (user_id, amount, balance_after, reason, reference, idempotency_key, created_at)
           VALUES ($1, $2, $3, 'usage', $4, $5, $6)"#,
        user_id,
        -spent,
        balance_after,
        reference,
        key,
        now
    )
    .execute(&mut *connection)
    .await?;
    sqlx::query!(
        "UPDATE credit_accounts SET balance = $2, reserved = reserved - $3 WHERE user_id = $1",
        user_id,
        balance_after,
        spent
    )
    .execute(&mut *connection)
    .await?;
    Ok(Applied::Recorded { balance_after })
}

/// One account's charge of reserved credits in a batch.
pub struct ReservedCharge {
    pub user_id: Uuid,
    pub spent: i64,
    /// The entry's idempotency key.
    pub key: String,
}

/// `charge_reserved` for many accounts in one statement: one usage entry each, balance and
/// reserve falling together. The caller holds every account's lock (`lock_accounts`); a charge
/// whose key was recorded before is skipped, and none takes more than its account reserved.
pub async fn charge_reserved_many(
    connection: &mut PgConnection,
    charges: &[ReservedCharge],
    reference: &str,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    let users: Vec<Uuid> = charges.iter().map(|charge| charge.user_id).collect();
    let spent: Vec<i64> = charges.iter().map(|charge| charge.spent).collect();
    let keys: Vec<String> = charges.iter().map(|charge| charge.key.clone()).collect();
    sqlx::query!(
        r#"WITH charge AS (
               SELECT a.user_id, LEAST(d.spent, a.reserved) AS spent, d.key
               FROM unnest($1::uuid[], $2::bigint[], $3::text[]) AS d(user_id, spent, key)
               JOIN credit_accounts a ON a.user_id = d.user_id
               WHERE NOT EXISTS (SELECT 1 FROM ledger_entries e WHERE e.idempotency_key = d.key)
           ), moved AS (
               UPDATE credit_accounts a
               SET balance = a.balance - c.spent, reserved = a.reserved - c.spent
               FROM charge c WHERE a.user_id = c.user_id AND c.spent > 0
               RETURNING a.user_id, a.balance AS balance_after, c.spent, c.key
           )
           INSERT INTO ledger_entries
               (user_id, amount, balance_after, reason, reference, idempotency_key, created_at)
           SELECT user_id, -spent, balance_after, 'usage', $4, key, $5 FROM moved"#,
        &users,
        &spent,
        &keys as &[String],
        reference,
        now
    )
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Locks the credit accounts of `users` in one order (by id), so that batches and single
/// movements never wait on each other in a cycle.
pub async fn lock_accounts(
    connection: &mut PgConnection,
    users: &[Uuid],
) -> Result<(), LedgerError> {
    sqlx::query!(
        "SELECT user_id FROM credit_accounts WHERE user_id = ANY($1) ORDER BY user_id FOR UPDATE",
        users
    )
    .fetch_all(&mut *connection)
    .await?;
    Ok(())
}

pub async fn balance(pool: &PgPool, user_id: Uuid) -> Result<i64, sqlx::Error> {
    let balance = sqlx::query_scalar!(
        "SELECT balance FROM credit_accounts WHERE user_id = $1",
        user_id
    )
    .fetch_optional(pool)
    .await?;
    Ok(balance.unwrap_or(0))
}

/// The balances of several accounts; an account without credits is absent.
pub async fn balances(
    pool: &PgPool,
    user_ids: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, i64>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT user_id, balance FROM credit_accounts WHERE user_id = ANY($1)",
        user_ids
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.user_id, row.balance))
        .collect())
}

/// What each of several accounts has available beyond every lease (balance less reserved);
/// an account without credits is absent.
pub async fn available_among(
    pool: &PgPool,
    user_ids: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, i64>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT user_id, balance - reserved AS "available!" FROM credit_accounts
           WHERE user_id = ANY($1)"#,
        user_ids
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.user_id, row.available))
        .collect())
}

/// An entry as the user sees it.
#[derive(Serialize, ToSchema)]
pub struct Entry {
    pub id: i64,
    pub amount: i64,
    pub balance_after: i64,
    pub reason: String,
    pub reference: Option<String>,
    pub created_at: DateTime<Utc>,
}
