//! The blocks of capped keys (see `spend_cap.rs`): reserved under a key's cap when a call
//! needs one, settled with the usage they paid for, shrunk when another instance needs them,
//! ended with the account's lease.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use uuid::Uuid;

use super::directory::{Account, lock};
use super::limits::month_start;
use super::spend_cap::{CapPeriod, SpendCap};
use super::wallet::Shortfall;
use crate::clock::Clock;
use crate::ledger::LedgerError;

/// After a key's cap was found spent, its calls are refused without asking again for this
/// long (unless the cap changes).
const SPENT_BACKOFF: Duration = Duration::from_millis(250);

/// What the meter lends the blocks' reservations: its pool, clock, instance and lease TTL.
pub(super) struct KeyBlocks<'a> {
    pub pool: &'a PgPool,
    pub clock: &'a Clock,
    pub instance_id: Uuid,
    pub ttl_secs: f64,
}

impl KeyBlocks<'_> {
    /// Makes sure the wallet's block of `key_id` covers `cost` under `cap`, reserving one when
    /// it does not (and asking other instances for their unspent blocks when they hold the
    /// rest); `SpendCap` when the cap cannot cover the call. Callers hold `account.top_up`.
    pub(super) async fn cover(
        &self,
        account: &Account,
        key_id: Uuid,
        cap: SpendCap,
        cost: i64,
    ) -> Result<Result<(), Shortfall>, LedgerError> {
        {
            let wallet = lock(account);
            if let Some(budget) = wallet.key_budgets.get(&key_id) {
                if budget.covers(cap, cost) {
                    return Ok(Ok(()));
                }
                let believed_spent = budget.spent_until.is_some_and(|t| Instant::now() < t);
                if budget.cap == Some(cap) && believed_spent {
                    return Ok(Err(Shortfall::SpendCap));
                }
            }
        }
        let others_hold = self.reserve_key_block(account, key_id, cap, cost).await?;
        if key_covers(account, key_id, cap, cost) {
            return Ok(Ok(()));
        }
        if others_hold > 0 {
            super::signals::reclaim_and_wait(self.pool, account).await?;
            self.reserve_key_block(account, key_id, cap, cost).await?;
        }
        if key_covers(account, key_id, cap, cost) {
            return Ok(Ok(()));
        }
        if let Some(budget) = lock(account).key_budgets.get_mut(&key_id) {
            budget.spent_until = Some(Instant::now() + SPENT_BACKOFF);
        }
        Ok(Err(Shortfall::SpendCap))
    }

    /// Reserves a block of the key's headroom (about two ticks of the account's pace, at least
    /// ten calls), and answers how much of it other instances' blocks hold unsettled.
    async fn reserve_key_block(
        &self,
        account: &Account,
        key_id: Uuid,
        cap: SpendCap,
        cost: i64,
    ) -> Result<i64, LedgerError> {
        let (wanted, to_release) = {
            let mut wallet = lock(account);
            let pace = wallet.spent_last_tick.max(wallet.spent_this_tick);
            let budget = wallet.key_budgets.entry(key_id).or_default();
            if budget.cap != Some(cap) {
                let unspent = budget.remaining().max(0);
                budget.granted -= unspent;
                budget.to_release += unspent;
                budget.cap = Some(cap);
            }
            (
                pace.saturating_mul(2).max(cost.saturating_mul(10)),
                budget.to_release,
            )
        };
        let mut transaction = self.pool.begin().await?;
        // Reservations of one key take turns on its row. The cap is read here, not from the
        // cache, so a cap lowered a moment ago is already the one that counts.
        let key = sqlx::query!(
            "SELECT spend_cap_credits, spend_cap_period FROM api_keys WHERE id = $1 FOR UPDATE",
            key_id
        )
        .fetch_one(&mut *transaction)
        .await?;
        let current =
            SpendCap::from_columns(key.spend_cap_credits, key.spend_cap_period.as_deref());
        let since = match current.map(|cap| cap.period) {
            Some(CapPeriod::Month) => Some(month_start(self.clock.now())),
            _ => None,
        };
        // One statement, so usage and blocks are read at the same instant: a settlement moves
        // spending from one to the other atomically.
        let held = sqlx::query!(
            r#"SELECT
                 (SELECT COALESCE(sum(credits), 0) FROM usage_hourly
                  WHERE user_id = $2 AND key_id = $1
                    AND hour >= COALESCE($3, '-infinity'::timestamptz))::bigint AS "spent!",
                 (SELECT COALESCE(sum(amount - settled), 0) FROM key_spend_leases
                  WHERE key_id = $1 AND instance_id <> $4)::bigint AS "others!",
                 (SELECT COALESCE(sum(amount - settled), 0) FROM key_spend_leases
                  WHERE key_id = $1 AND instance_id = $4)::bigint AS "mine!""#,
            key_id,
            account.user_id,
            since,
            self.instance_id
        )
        .fetch_one(&mut *transaction)
        .await?;
        let headroom = match current {
            Some(cap) => cap.credits - held.spent - held.others - (held.mine - to_release),
            None => i64::MAX,
        };
        let granted = if headroom >= cost {
            wanted.min(headroom)
        } else {
            0
        };
        if granted > 0 || to_release > 0 {
            sqlx::query!(
                r#"INSERT INTO key_spend_leases (key_id, instance_id, amount, expires_at)
                   VALUES ($1, $2, $3, now() + make_interval(secs => $5))
                   ON CONFLICT (key_id, instance_id) DO UPDATE
                   SET amount = GREATEST(key_spend_leases.settled, key_spend_leases.amount - $4)
                                + EXCLUDED.amount,
                       expires_at = EXCLUDED.expires_at"#,
                key_id,
                self.instance_id,
                granted,
                to_release,
                self.ttl_secs
            )
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;

        let mut wallet = lock(account);
        let budget = wallet.key_budgets.entry(key_id).or_default();
        budget.to_release -= to_release;
        budget.granted += granted;
        budget.spent_until = None;
        Ok(held.others)
    }
}

fn key_covers(account: &Account, key_id: Uuid, cap: SpendCap, cost: i64) -> bool {
    lock(account)
        .key_budgets
        .get(&key_id)
        .is_some_and(|budget| budget.covers(cap, cost))
}

/// Adds what calls spent of their keys' blocks to the blocks' `settled`, in the transaction
/// that writes the same calls to `usage_hourly`. A block that expired meanwhile (this instance
/// stalled) is not there any more: its spending counts through the usage alone.
pub(super) async fn settle_key_blocks(
    connection: &mut sqlx::PgConnection,
    instance_id: Uuid,
    spending: &[(Uuid, i64)],
) -> Result<(), sqlx::Error> {
    if spending.is_empty() {
        return Ok(());
    }
    let (keys, amounts): (Vec<Uuid>, Vec<i64>) = spending.iter().copied().unzip();
    sqlx::query!(
        r#"UPDATE key_spend_leases k SET settled = k.settled + d.amount
           FROM unnest($1::uuid[], $2::bigint[]) AS d(key_id, amount)
           WHERE k.key_id = d.key_id AND k.instance_id = $3 AND k.settled + d.amount <= k.amount"#,
        &keys,
        &amounts,
        instance_id
    )
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Ends this instance's blocks of `keys` (their wallet gave everything back).
pub(super) async fn end_key_blocks(
    connection: &mut sqlx::PgConnection,
    instance_id: Uuid,
    keys: &[Uuid],
) -> Result<(), sqlx::Error> {
    if keys.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        "DELETE FROM key_spend_leases WHERE instance_id = $1 AND key_id = ANY($2)",
        instance_id,
        keys
    )
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Shrinks this instance's blocks by what no call holds of them (another instance needs it),
/// and says so on the gateway's channel, so that instance's waiting call goes on.
pub(super) async fn release_key_blocks(
    connection: &mut sqlx::PgConnection,
    instance_id: Uuid,
    user_id: Uuid,
    unused: &[(Uuid, i64)],
) -> Result<(), sqlx::Error> {
    if unused.is_empty() {
        return Ok(());
    }
    let (keys, amounts): (Vec<Uuid>, Vec<i64>) = unused.iter().copied().unzip();
    sqlx::query!(
        r#"UPDATE key_spend_leases k SET amount = k.amount - d.amount
           FROM unnest($1::uuid[], $2::bigint[]) AS d(key_id, amount)
           WHERE k.key_id = d.key_id AND k.instance_id = $3 AND k.amount - k.settled >= d.amount"#,
        &keys,
        &amounts,
        instance_id
    )
    .execute(&mut *connection)
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(super::signals::CHANNEL)
        .bind(format!("credits:{user_id}"))
        .execute(&mut *connection)
        .await?;
    Ok(())
}
