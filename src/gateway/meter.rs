//! Exact credits at proxy speed. An instance reserves credits from an account in blocks (a
//! lease: `credit_accounts.reserved` grows, a `credit_leases` row records it), spends them in
//! memory, settles what was spent into the ledger once per tick (one entry per account), and
//! gives back what an idle wallet did not spend. A call holds its cost while in flight and is
//! charged only when the upstream answered below 500.
//!
//! Nothing is ever charged that was not reserved, and reserved credits are available credits,
//! so a balance cannot go below zero and a call cannot be charged twice. If an instance dies,
//! its lease stops being renewed; after `lease_ttl` any instance gives the unsettled part back.
//! The worst case is an under-charge of what the dead instance served but had not settled
//! (at most one tick of calls, and never more than its lease), never an over-charge.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::directory::{Account, Directory};
use super::wallet::{UsageDelta, UsageKey, Wallet};
use crate::clock::Clock;
use crate::ledger;

/// After a reservation found no credits, calls answer 40201 without asking again for this long,
/// unless a notification says credits arrived before.
const EMPTY_BACKOFF: Duration = Duration::from_millis(250);
/// Accounts settled together in one transaction.
const SETTLE_BATCH: usize = 1000;
/// How long a call waits for other instances to give back credits it needs.
const RECLAIM_WAIT: Duration = Duration::from_millis(500);
/// A wallet idle for this many ticks gives its unspent reserve back.
const IDLE_TICKS: u32 = 2;

pub struct Meter {
    pool: PgPool,
    clock: Arc<Clock>,
    instance_id: Uuid,
    lease_ttl: Duration,
}

/// A call's cost, held while the call is in flight. Dropped without `charge` (refused, failed,
/// or abandoned by a client that hung up), it goes back to the wallet.
pub struct HeldCredits<'a> {
    meter: &'a Meter,
    account: Arc<Account>,
    cost: i64,
    charged: bool,
}

impl HeldCredits<'_> {
    /// Charges the held cost and counts the call.
    pub fn charge(mut self, key_id: Uuid, provider: &str) {
        self.meter
            .charge(&self.account, self.cost, key_id, provider);
        self.charged = true;
    }
}

impl Drop for HeldCredits<'_> {
    fn drop(&mut self) {
        if !self.charged && self.cost > 0 {
            lock(&self.account).held -= self.cost;
        }
    }
}

impl Meter {
    pub fn new(pool: PgPool, clock: Arc<Clock>, lease_ttl: Duration) -> Meter {
        Meter {
            pool,
            clock,
            instance_id: Uuid::new_v4(),
            lease_ttl,
        }
    }

    fn ttl_secs(&self) -> f64 {
        self.lease_ttl.as_secs_f64()
    }

    /// Holds `cost` credits for a call, reserving a new block from PostgreSQL when the lease
    /// runs short; None when the account cannot pay.
    pub async fn hold(
        &self,
        account: &Arc<Account>,
        cost: i64,
    ) -> Result<Option<HeldCredits<'_>>, ledger::LedgerError> {
        let held = || HeldCredits {
            meter: self,
            account: account.clone(),
            cost,
            charged: false,
        };
        if cost <= 0 || try_hold(account, cost) {
            return Ok(Some(held()));
        }
        let _single_flight = account.top_up.lock().await;
        if try_hold(account, cost) {
            return Ok(Some(held()));
        }
        // A reservation that found nothing is believed until credits arrive (a notification
        // clears it) or briefly at most, so a broke account's calls do not each ask PostgreSQL.
        if lock(account)
            .empty_until
            .is_some_and(|until| Instant::now() < until)
        {
            return Ok(None);
        }
        let others_hold = self.reserve_block(account, cost).await?;
        if try_hold(account, cost) {
            return Ok(Some(held()));
        }
        if others_hold == 0 {
            return Ok(None);
        }
        // Other instances hold the account's credits in their leases: ask them to give back
        // what their calls do not hold, wait (briefly) for it, and reserve again.
        let arrived = account.credits_arrived.notified();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        super::signals::request_reclaim(&self.pool, account.user_id).await?;
        let _ = tokio::time::timeout(RECLAIM_WAIT, arrived).await;
        self.reserve_block(account, cost).await?;
        Ok(try_hold(account, cost).then(held))
    }

    /// Credits became available: the next call reserves again instead of believing the last
    /// empty reservation, and calls waiting for a reclaim go on.
    pub fn credits_arrived(&self, account: &Account) {
        lock(account).empty_until = None;
        account.credits_arrived.notify_waiters();
    }

    /// Gives back the part of this instance's lease that no call holds, because another
    /// instance needs it: the lease shrinks by that much and the reserve with it.
    pub async fn give_back_unused(&self, account: &Account) -> Result<(), ledger::LedgerError> {
        let (lease_id, unused) = {
            let mut wallet = lock(account);
            let unused = wallet.remaining();
            let Some(lease_id) = wallet.lease_id.filter(|_| unused > 0) else {
                return Ok(());
            };
            // Taken out at once, so no call holds it while it goes back.
            wallet.granted -= unused;
            (lease_id, unused)
        };
        let returned = async {
            let mut transaction = self.pool.begin().await?;
            ledger::lock_account(&mut transaction, account.user_id).await?;
            let shrunk = sqlx::query!(
                "UPDATE credit_leases SET amount = amount - $2 WHERE id = $1 AND amount - settled >= $2",
                lease_id,
                unused
            )
            .execute(&mut *transaction)
            .await?;
            if shrunk.rows_affected() == 1 {
                ledger::unreserve(&mut transaction, account.user_id, unused).await?;
            }
            transaction.commit().await?;
            Ok::<_, ledger::LedgerError>(())
        }
        .await;
        if returned.is_err() {
            lock(account).granted += unused;
        }
        returned
    }

    /// Whether the lease is running low while the account has plenty beyond it: then a
    /// background top-up keeps calls from waiting on one. Near the end of an account's credits
    /// top-ups stay on the call's path, so no instance sits on the last credits another needs.
    pub fn wants_prefetch(&self, account: &Account, cost: i64) -> bool {
        let wallet = lock(account);
        let pace = wallet
            .spent_last_tick
            .max(wallet.spent_this_tick)
            .max(cost.saturating_mul(10));
        wallet.lease_id.is_some()
            && wallet.remaining() < pace / 2
            && wallet.available_beyond > pace.saturating_mul(4)
    }

    /// Tops the lease up unless another top-up is under way.
    pub async fn prefetch(&self, account: &Account, cost: i64) {
        let Ok(_single_flight) = account.top_up.try_lock() else {
            return;
        };
        if let Err(error) = self.reserve_block(account, cost).await {
            tracing::warn!(user_id = %account.user_id, error = %error, "a background top-up failed");
        }
    }

    /// Reserves about two ticks' worth of credits (at least ten calls) into the lease, and
    /// answers how many of the account's credits other instances' leases hold unsettled.
    /// Callers hold `account.top_up`.
    async fn reserve_block(
        &self,
        account: &Account,
        cost: i64,
    ) -> Result<i64, ledger::LedgerError> {
        let (wanted, lease_id) = {
            let wallet = lock(account);
            let pace = wallet.spent_last_tick.max(wallet.spent_this_tick);
            (
                pace.saturating_mul(2).max(cost.saturating_mul(10)),
                wallet.lease_id.unwrap_or_else(Uuid::new_v4),
            )
        };
        let mut transaction = self.pool.begin().await?;
        let granted = ledger::reserve(&mut transaction, account.user_id, wanted, cost).await?;
        if granted > 0 {
            sqlx::query!(
                r#"INSERT INTO credit_leases (id, user_id, instance_id, amount, expires_at)
                   VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
                   ON CONFLICT (id) DO UPDATE SET amount = credit_leases.amount + EXCLUDED.amount,
                                                  expires_at = EXCLUDED.expires_at"#,
                lease_id,
                account.user_id,
                self.instance_id,
                granted,
                self.ttl_secs()
            )
            .execute(&mut *transaction)
            .await?;
        }
        let available = sqlx::query_scalar!(
            "SELECT balance - reserved FROM credit_accounts WHERE user_id = $1",
            account.user_id
        )
        .fetch_one(&mut *transaction)
        .await?
        .unwrap_or(0);
        let others_hold = sqlx::query_scalar!(
            r#"SELECT COALESCE(sum(amount - settled), 0)::bigint AS "held!" FROM credit_leases
               WHERE user_id = $1 AND instance_id <> $2"#,
            account.user_id,
            self.instance_id
        )
        .fetch_one(&mut *transaction)
        .await?;
        transaction.commit().await?;

        let mut wallet = lock(account);
        wallet.available_beyond = available;
        if granted == 0 {
            wallet.empty_until = Some(Instant::now() + EMPTY_BACKOFF);
        } else {
            wallet.lease_id = Some(lease_id);
            wallet.granted += granted;
            wallet.empty_until = None;
        }
        Ok(others_hold)
    }

    /// Charges a held call and counts it.
    fn charge(&self, account: &Account, cost: i64, key_id: Uuid, provider: &str) {
        let hour = self.hour();
        let mut wallet = lock(account);
        if cost > 0 {
            wallet.held -= cost;
            wallet.spent += cost;
            wallet.spent_this_tick += cost;
        }
        let usage = wallet
            .usage
            .entry((key_id, provider.to_owned(), hour))
            .or_default();
        usage.calls += 1;
        usage.credits += cost;
    }

    /// Counts a call the upstream failed (not charged).
    pub fn count_error(&self, account: &Account, key_id: Uuid, provider: &str) {
        let hour = self.hour();
        let mut wallet = lock(account);
        wallet
            .usage
            .entry((key_id, provider.to_owned(), hour))
            .or_default()
            .errors += 1;
    }

    fn hour(&self) -> DateTime<Utc> {
        let now = self.clock.now();
        now.duration_trunc(chrono::Duration::hours(1))
            .unwrap_or(now)
    }

    /// One tick: settles every wallet's spending and usage (the busy ones together, in a few
    /// set-based transactions), gives idle reserves back, renews this instance's leases and
    /// writes `last_used_at`. Its cost follows the accounts that were served, not those known.
    pub async fn tick(&self, directory: &Directory) -> Result<(), sqlx::Error> {
        let mut batch = Vec::new();
        for account in directory.cached_accounts() {
            let taken = take(&account, false);
            if taken.lease_id.is_some() && !taken.give_back {
                if taken.to_settle != 0 || !taken.usage.usage.is_empty() {
                    batch.push((account.clone(), taken));
                }
            } else if let Err(error) = self.settle_taken(&account, taken).await {
                tracing::warn!(user_id = %account.user_id, error = %error, "settling usage failed");
            }
        }
        while !batch.is_empty() {
            let chunk: Vec<_> = batch.drain(..batch.len().min(SETTLE_BATCH)).collect();
            let accounts = chunk.len();
            if let Err(error) = self.settle_batch(chunk).await {
                tracing::warn!(accounts, error = %error, "settling a batch of accounts failed");
            }
        }
        sqlx::query!(
            r#"UPDATE credit_leases SET expires_at = now() + make_interval(secs => $2)
               WHERE instance_id = $1"#,
            self.instance_id,
            self.ttl_secs()
        )
        .execute(&self.pool)
        .await?;
        self.flush_last_used(directory).await
    }

    /// Settles the spending and usage of accounts that keep their leases, in one transaction:
    /// their leases, their ledger entries and their usage rows each in one statement. A lease
    /// that expired meanwhile is charged what is still available, one account at a time. On
    /// failure nothing is written and every account keeps what it had to settle.
    async fn settle_batch(
        &self,
        batch: Vec<(Arc<Account>, Taken)>,
    ) -> Result<(), ledger::LedgerError> {
        let now = self.clock.now();
        let spending: Vec<_> = batch
            .iter()
            .filter(|(_, taken)| taken.to_settle > 0)
            .filter_map(|(account, taken)| Some((account, taken, taken.lease_id?)))
            .collect();
        let lease_ids: Vec<Uuid> = spending.iter().map(|(_, _, lease)| *lease).collect();
        let amounts: Vec<i64> = spending
            .iter()
            .map(|(_, taken, _)| taken.to_settle)
            .collect();
        let users: Vec<Uuid> = spending
            .iter()
            .map(|(account, _, _)| account.user_id)
            .collect();

        let mut transaction = self.pool.begin().await?;
        // Only the accounts whose credits move are locked; usage rows need no account lock.
        let mut settled = std::collections::HashSet::new();
        if !spending.is_empty() {
            ledger::lock_accounts(&mut transaction, &users).await?;
            settled = sqlx::query_scalar!(
                r#"UPDATE credit_leases l SET settled = l.settled + d.amount
                   FROM unnest($1::uuid[], $2::bigint[]) AS d(id, amount)
                   WHERE l.id = d.id AND l.settled + d.amount <= l.amount
                   RETURNING l.id"#,
                &lease_ids,
                &amounts
            )
            .fetch_all(&mut *transaction)
            .await?
            .into_iter()
            .collect();
        }
        let mut charges = Vec::with_capacity(spending.len());
        for (account, taken, lease_id) in &spending {
            let settled_after = lock(account).settled + taken.to_settle;
            if settled.contains(lease_id) {
                charges.push(ledger::ReservedCharge {
                    user_id: account.user_id,
                    spent: taken.to_settle,
                    key: format!("usage:{lease_id}:{settled_after}"),
                });
            } else {
                let key = format!("usage:{lease_id}:{settled_after}:late");
                self.charge_late(&mut transaction, account, taken.to_settle, &key, now)
                    .await?;
            }
        }
        if !charges.is_empty() {
            ledger::charge_reserved_many(&mut transaction, &charges, "gateway", now).await?;
        }
        let usage = batch
            .iter()
            .map(|(account, taken)| (account.user_id, &taken.usage.usage));
        write_usage(&mut transaction, usage).await?;
        transaction.commit().await?;
        for (account, taken) in batch {
            lock(&account).settled += taken.to_settle;
            taken.usage.written();
        }
        Ok(())
    }

    /// What calls spent from a lease that expired under this instance (it stalled): the
    /// reserve went back, so what is still available is charged and the rest is an under-charge.
    async fn charge_late(
        &self,
        transaction: &mut sqlx::PgConnection,
        account: &Account,
        owed: i64,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<(), ledger::LedgerError> {
        let movement = ledger::Movement {
            user_id: account.user_id,
            amount: -owed,
            reason: "usage",
            reference: Some("gateway"),
            key,
        };
        let taken = ledger::take_up_to(transaction, movement, now).await?;
        tracing::warn!(user_id = %account.user_id, owed, taken,
            "a lease expired before it was settled");
        Ok(())
    }

    /// Writes what `account` spent since the last settlement; with `closing`, or when the
    /// wallet has been idle, also gives the unspent reserve back and ends the lease.
    pub async fn settle(
        &self,
        account: &Arc<Account>,
        closing: bool,
    ) -> Result<(), ledger::LedgerError> {
        let taken = take(account, closing);
        self.settle_taken(account, taken).await
    }

    /// Settles what was taken out of `account`'s wallet, alone in its transaction.
    async fn settle_taken(
        &self,
        account: &Account,
        taken: Taken,
    ) -> Result<(), ledger::LedgerError> {
        let now = self.clock.now();
        let Taken {
            lease_id,
            to_settle,
            usage,
            give_back,
        } = taken;
        let Some(lease_id) = lease_id else {
            // Without a lease: the usage of free and failed calls, and what calls spent while
            // the last lease was being given back (they held credits of a lease that then went
            // back): that is charged from the balance, never below zero.
            if usage.usage.is_empty() && to_settle == 0 {
                return Ok(());
            }
            let mut transaction = self.pool.begin().await?;
            if to_settle > 0 {
                let key = format!("usage:raced:{}", Uuid::new_v4());
                let movement = ledger::Movement {
                    user_id: account.user_id,
                    amount: -to_settle,
                    reason: "usage",
                    reference: Some("gateway"),
                    key: &key,
                };
                let taken = ledger::take_up_to(&mut transaction, movement, now).await?;
                if taken < to_settle {
                    tracing::warn!(user_id = %account.user_id, owed = to_settle, taken,
                        "calls that raced a lease's return could not all be charged");
                }
            }
            write_usage(&mut transaction, [(account.user_id, &usage.usage)]).await?;
            transaction.commit().await?;
            usage.written();
            lock(account).settled += to_settle;
            return Ok(());
        };

        let mut transaction = self.pool.begin().await?;
        ledger::lock_account(&mut transaction, account.user_id).await?;
        let settled_after = lock(account).settled + to_settle;
        let lease = sqlx::query!(
            r#"UPDATE credit_leases SET settled = settled + $2 WHERE id = $1 AND settled + $2 <= amount
               RETURNING amount, settled"#,
            lease_id,
            to_settle
        )
        .fetch_optional(&mut *transaction)
        .await?;
        match &lease {
            Some(_) if to_settle > 0 => {
                let key = format!("usage:{lease_id}:{settled_after}");
                ledger::charge_reserved(
                    &mut transaction,
                    account.user_id,
                    to_settle,
                    "gateway",
                    &key,
                    now,
                )
                .await?;
            }
            Some(_) => {}
            None => {
                let key = format!("usage:{lease_id}:{settled_after}:late");
                self.charge_late(&mut transaction, account, to_settle, &key, now)
                    .await?;
            }
        }
        write_usage(&mut transaction, [(account.user_id, &usage.usage)]).await?;
        let returned = match (&lease, give_back) {
            (Some(lease), true) => {
                let unspent = lease.amount - lease.settled;
                ledger::unreserve(&mut transaction, account.user_id, unspent).await?;
                sqlx::query!("DELETE FROM credit_leases WHERE id = $1", lease_id)
                    .execute(&mut *transaction)
                    .await?;
                true
            }
            (None, _) => true,
            _ => false,
        };
        transaction.commit().await?;
        usage.written();

        let mut wallet = lock(account);
        wallet.settled += to_settle;
        if returned {
            // Calls may have held credits of the lease since the snapshot: what they spend is
            // kept and charged at the next settlement, from the lease then or the balance.
            let spent_since = wallet.spent - wallet.settled;
            *wallet = Wallet {
                spent: spent_since,
                usage: std::mem::take(&mut wallet.usage),
                available_beyond: wallet.available_beyond + (wallet.granted - wallet.spent),
                held: wallet.held,
                ..Wallet::default()
            };
            if spent_since != 0 || wallet.held != 0 {
                tracing::debug!(user_id = %account.user_id, "calls raced the lease's return");
            }
        }
        Ok(())
    }

    async fn flush_last_used(&self, directory: &Directory) -> Result<(), sqlx::Error> {
        let mut ids = Vec::new();
        let mut times = Vec::new();
        for entry in directory.cached_keys() {
            let used = entry.last_used.load(Ordering::Relaxed);
            if used > entry.last_flushed.swap(used, Ordering::Relaxed) {
                ids.push(entry.key_id);
                times.push(DateTime::from_timestamp(used, 0).unwrap_or_default());
            }
        }
        if !ids.is_empty() {
            sqlx::query!(
                r#"UPDATE api_keys SET last_used_at = GREATEST(last_used_at, t.used)
                   FROM unnest($1::uuid[], $2::timestamptz[]) AS t(id, used)
                   WHERE api_keys.id = t.id"#,
                &ids,
                &times
            )
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// Gives back the unsettled reserve of leases nobody renewed (their instance died).
    pub async fn sweep_expired(&self) -> Result<u64, ledger::LedgerError> {
        let expired = sqlx::query!(
            r#"SELECT id, user_id FROM credit_leases
               WHERE expires_at < now() AND instance_id <> $1 LIMIT 500"#,
            self.instance_id
        )
        .fetch_all(&self.pool)
        .await?;
        let mut returned = 0;
        for lease in expired {
            // The account first, like every other transaction on credits.
            let mut transaction = self.pool.begin().await?;
            ledger::lock_account(&mut transaction, lease.user_id).await?;
            let unsettled = sqlx::query_scalar!(
                r#"DELETE FROM credit_leases WHERE id = $1 AND expires_at < now()
                   RETURNING amount - settled AS "unsettled!""#,
                lease.id
            )
            .fetch_optional(&mut *transaction)
            .await?;
            if let Some(unsettled) = unsettled {
                ledger::unreserve(&mut transaction, lease.user_id, unsettled).await?;
                returned += 1;
            }
            transaction.commit().await?;
        }
        if returned > 0 {
            tracing::info!(leases = returned, "returned the reserve of expired leases");
        }
        Ok(returned)
    }

    /// On shutdown: settles every wallet and gives every reserve back.
    pub async fn close(&self, directory: &Directory) {
        for account in directory.cached_accounts() {
            if let Err(error) = self.settle(&account, true).await {
                tracing::warn!(user_id = %account.user_id, error = %error,
                    "settling on shutdown failed; the lease will expire instead");
            }
        }
        if let Err(error) = self.flush_last_used(directory).await {
            tracing::warn!(error = %error, "writing last_used_at on shutdown failed");
        }
    }
}

/// What a settlement takes out of a wallet.
struct Taken {
    lease_id: Option<Uuid>,
    /// Spent and not yet settled.
    to_settle: i64,
    usage: PendingUsage,
    /// The unspent reserve goes back and the lease ends.
    give_back: bool,
}

/// Takes what `account` has to settle out of its wallet, and moves its tick counters on.
fn take(account: &Arc<Account>, closing: bool) -> Taken {
    let mut wallet = lock(account);
    let quiet = wallet.spent_this_tick == 0 && wallet.held == 0;
    wallet.idle_ticks = if quiet { wallet.idle_ticks + 1 } else { 0 };
    wallet.spent_last_tick = wallet.spent_this_tick;
    wallet.spent_this_tick = 0;
    Taken {
        lease_id: wallet.lease_id,
        to_settle: wallet.spent - wallet.settled,
        give_back: (closing || wallet.idle_ticks >= IDLE_TICKS) && wallet.held == 0,
        usage: PendingUsage {
            account: account.clone(),
            usage: std::mem::take(&mut wallet.usage),
            written: false,
        },
    }
}

/// Usage taken out of a wallet to be written; unless it was, it goes back into the wallet when
/// dropped (a failed settlement), to be written with the next one.
struct PendingUsage {
    account: Arc<Account>,
    usage: HashMap<UsageKey, UsageDelta>,
    written: bool,
}

impl PendingUsage {
    fn written(mut self) {
        self.written = true;
    }
}

impl Drop for PendingUsage {
    fn drop(&mut self) {
        if self.written || self.usage.is_empty() {
            return;
        }
        let mut wallet = lock(&self.account);
        for (key, delta) in self.usage.drain() {
            let kept = wallet.usage.entry(key).or_default();
            kept.calls += delta.calls;
            kept.credits += delta.credits;
            kept.errors += delta.errors;
        }
    }
}

fn lock(account: &Account) -> std::sync::MutexGuard<'_, Wallet> {
    account
        .wallet
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
}

fn try_hold(account: &Account, cost: i64) -> bool {
    let mut wallet = lock(account);
    if wallet.remaining() >= cost {
        wallet.held += cost;
        true
    } else {
        false
    }
}

/// Adds the usage of every account given to `usage_hourly`, in one statement.
async fn write_usage<'a>(
    connection: &mut sqlx::PgConnection,
    usage: impl IntoIterator<Item = (Uuid, &'a HashMap<UsageKey, UsageDelta>)>,
) -> Result<(), sqlx::Error> {
    let (mut users, mut keys, mut providers, mut hours) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut calls, mut credits, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    for (user_id, deltas) in usage {
        for ((key_id, provider, hour), delta) in deltas {
            users.push(user_id);
            keys.push(*key_id);
            providers.push(provider.clone());
            hours.push(*hour);
            calls.push(delta.calls);
            credits.push(delta.credits);
            errors.push(delta.errors);
        }
    }
    if users.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        r#"INSERT INTO usage_hourly (user_id, key_id, provider, hour, calls, credits, errors)
           SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[],
                                $5::bigint[], $6::bigint[], $7::bigint[])
           ON CONFLICT (user_id, hour, key_id, provider) DO UPDATE
           SET calls = usage_hourly.calls + EXCLUDED.calls,
               credits = usage_hourly.credits + EXCLUDED.credits,
               errors = usage_hourly.errors + EXCLUDED.errors"#,
        &users,
        &keys,
        &providers as &[String],
        &hours,
        &calls,
        &credits,
        &errors
    )
    .execute(&mut *connection)
    .await?;
    Ok(())
}
