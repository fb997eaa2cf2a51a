//! Settlement: once a tick, what the wallets spent goes into the ledger and the leases, and
//! their usage into `usage_hourly`; the accounts served in the tick together, in a few set-based
//! transactions (issue 18), the rest (a lease going back, no lease) one by one. Also the renewal
//! of this instance's leases, `last_used_at`, the return of dead instances' leases, and the
//! closing round on shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::directory::{Account, Directory, lock};
use super::key_blocks::{end_key_blocks, settle_key_blocks};
use super::meter::{Meter, idle_ticks_kept};
use super::unconfirmed::transaction_id;
use super::wallet::KeyBudget;
use super::wallet::{UsageMap, Wallet};
use crate::ledger;

/// Accounts settled together in one transaction.
const SETTLE_BATCH: usize = 1000;
/// `last_used_at` is kept to this many seconds.
const LAST_USED_GRAIN_SECS: i64 = 30;

impl Meter {
    /// One tick: settles every wallet's spending and usage (the busy ones together, in a few
    /// set-based transactions), gives idle reserves back, renews this instance's leases and
    /// writes `last_used_at`. Its cost follows the accounts that were served, not those known.
    pub async fn tick(&self, directory: &Directory) -> Result<(), sqlx::Error> {
        if let Err(error) = self.unconfirmed.confirm(&self.pool).await {
            tracing::warn!(error = %error, "asking whether unanswered settlements committed failed");
        }
        let mut batch = Vec::new();
        for account in directory.cached_accounts() {
            if lock(&account).commit_unconfirmed {
                continue;
            }
            // A lease goes back only while no reservation runs for the account (they would
            // race over the same lease); a wallet busy reserving is not idle anyway.
            let reserving = account.top_up.try_lock().ok();
            let taken = take(&account, false, reserving.is_some());
            if taken.lease_id.is_some() && !taken.give_back {
                drop(reserving);
                if taken.to_settle != 0 || !taken.usage.usage.is_empty() {
                    batch.push((account.clone(), taken));
                }
            } else if let Err(error) = self.settle_taken(&account, taken).await {
                tracing::warn!(user_id = %account.user_id, error = %error, "settling usage failed");
            }
        }
        self.settle_in_batches(batch).await;
        // Renewed when half their time is gone, so each lease is written every few ticks, not
        // every tick (the cost of holding many quiet accounts' leases). A lease locked by a
        // reservation (which renews it itself) or a settlement is left to the next tick: waiting
        // for it, holding the others, could close a cycle of locks with a batch of reservations.
        sqlx::query!(
            r#"UPDATE credit_leases SET expires_at = now() + make_interval(secs => $2)
               WHERE id IN (SELECT id FROM credit_leases
                            WHERE instance_id = $1
                              AND expires_at < now() + make_interval(secs => $2::float8 / 2)
                            FOR UPDATE SKIP LOCKED)"#,
            self.terms.instance_id,
            self.terms.ttl_secs
        )
        .execute(&self.pool)
        .await?;
        sqlx::query!(
            r#"UPDATE key_spend_leases SET expires_at = now() + make_interval(secs => $2)
               WHERE (key_id, instance_id) IN (
                   SELECT key_id, instance_id FROM key_spend_leases
                   WHERE instance_id = $1
                     AND expires_at < now() + make_interval(secs => $2::float8 / 2)
                   FOR UPDATE SKIP LOCKED)"#,
            self.terms.instance_id,
            self.terms.ttl_secs
        )
        .execute(&self.pool)
        .await?;
        self.flush_last_used(directory, false).await
    }

    /// Settles `batch` in transactions of up to `SETTLE_BATCH` accounts; a batch that fails
    /// keeps what it had to settle for the next tick (or, on shutdown, for the leases' expiry).
    async fn settle_in_batches(&self, mut batch: Vec<(Arc<Account>, Taken)>) {
        while !batch.is_empty() {
            let chunk: Vec<_> = batch.drain(..batch.len().min(SETTLE_BATCH)).collect();
            let accounts = chunk.len();
            if let Err(error) = self.settle_batch(chunk).await {
                tracing::warn!(accounts, error = %error, "settling a batch of accounts failed");
            }
        }
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
        let xid = transaction_id(&mut transaction).await?;
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
        let key_spending: Vec<(Uuid, i64)> = batch
            .iter()
            .flat_map(|(_, taken)| taken.key_spending.iter().copied())
            .collect();
        settle_key_blocks(&mut transaction, self.terms.instance_id, &key_spending).await?;
        let accounts = batch.iter().map(|(account, _)| account.clone()).collect();
        let committed = move || {
            for (account, taken) in batch {
                let mut wallet = lock(&account);
                wallet.settled += taken.to_settle;
                settled_keys(&mut wallet, &taken.key_spending);
                drop(wallet);
                taken.usage.written();
            }
        };
        self.unconfirmed
            .commit(transaction, xid, accounts, committed)
            .await?;
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

    /// Settles what was taken out of `account`'s wallet, alone in its transaction.
    async fn settle_taken(
        &self,
        account: &Arc<Account>,
        taken: Taken,
    ) -> Result<(), ledger::LedgerError> {
        let now = self.clock.now();
        let Taken {
            lease_id,
            to_settle,
            usage,
            give_back,
            key_spending,
        } = taken;
        // The key blocks go back with the lease (`take` already dropped their unspent part).
        let ending_keys: Vec<Uuid> = if give_back {
            lock(account).key_budgets.keys().copied().collect()
        } else {
            Vec::new()
        };
        let Some(lease_id) = lease_id else {
            // Without a lease: the usage of free and failed calls, and what calls spent while
            // the last lease was being given back (they held credits of a lease that then went
            // back): that is charged from the balance, never below zero.
            if usage.usage.is_empty() && to_settle == 0 && ending_keys.is_empty() {
                return Ok(());
            }
            let mut transaction = self.pool.begin().await?;
            let xid = transaction_id(&mut transaction).await?;
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
            settle_key_blocks(&mut transaction, self.terms.instance_id, &key_spending).await?;
            end_key_blocks(&mut transaction, self.terms.instance_id, &ending_keys).await?;
            let committed = {
                let account = account.clone();
                move || settled_alone(&account, to_settle, usage, &key_spending, give_back, false)
            };
            self.unconfirmed
                .commit(transaction, xid, vec![account.clone()], committed)
                .await?;
            return Ok(());
        };

        let mut transaction = self.pool.begin().await?;
        let xid = transaction_id(&mut transaction).await?;
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
        settle_key_blocks(&mut transaction, self.terms.instance_id, &key_spending).await?;
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
        end_key_blocks(&mut transaction, self.terms.instance_id, &ending_keys).await?;
        let committed = {
            let account = account.clone();
            move || {
                settled_alone(
                    &account,
                    to_settle,
                    usage,
                    &key_spending,
                    give_back,
                    returned,
                )
            }
        };
        self.unconfirmed
            .commit(transaction, xid, vec![account.clone()], committed)
            .await?;
        Ok(())
    }

    /// Writes `last_used_at` and `last_ip` of the keys used since they were last written, to
    /// the half minute (`closing`: all of them): with many keys in use, a write per key per
    /// tick was most of the database's work beside settlement.
    async fn flush_last_used(
        &self,
        directory: &Directory,
        closing: bool,
    ) -> Result<(), sqlx::Error> {
        let mut ids = Vec::new();
        let mut times = Vec::new();
        let mut addresses: Vec<Option<String>> = Vec::new();
        for entry in directory.cached_keys() {
            let used = entry.last_used.load(Ordering::Relaxed);
            let flushed = entry.last_flushed.load(Ordering::Relaxed);
            let due = used > flushed && (closing || used >= flushed + LAST_USED_GRAIN_SECS);
            if due {
                entry.last_flushed.store(used, Ordering::Relaxed);
                ids.push(entry.key_id);
                times.push(DateTime::from_timestamp(used, 0).unwrap_or_default());
                let ip = *entry.last_ip.lock().unwrap_or_else(|p| p.into_inner());
                addresses.push(ip.map(|ip| ip.to_string()));
            }
        }
        if !ids.is_empty() {
            sqlx::query!(
                r#"UPDATE api_keys SET last_used_at = GREATEST(last_used_at, t.used),
                          last_ip = COALESCE(t.ip, last_ip)
                   FROM unnest($1::uuid[], $2::timestamptz[], $3::text[]) AS t(id, used, ip)
                   WHERE api_keys.id = t.id"#,
                &ids,
                &times,
                &addresses as &[Option<String>]
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
            self.terms.instance_id
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
        // A key block's reserve is its row: deleting it frees it.
        sqlx::query!(
            "DELETE FROM key_spend_leases WHERE expires_at < now() AND instance_id <> $1",
            self.terms.instance_id
        )
        .execute(&self.pool)
        .await?;
        if returned > 0 {
            tracing::info!(leases = returned, "returned the reserve of expired leases");
        }
        Ok(returned)
    }

    /// On shutdown: settles every wallet and gives every reserve back, in a few set-based
    /// transactions whatever the number of accounts (one per account took minutes at tens of
    /// thousands, longer than a process is given to stop). What fails is left to the leases'
    /// expiry.
    pub async fn close(&self, directory: &Directory) {
        if let Err(error) = self.unconfirmed.confirm(&self.pool).await {
            tracing::warn!(error = %error, "asking whether unanswered settlements committed failed");
        }
        let mut batch = Vec::new();
        for account in directory.cached_accounts() {
            let _reserving = account.top_up.lock().await;
            // Still unknown: left as it is; the lease's expiry gives back what PostgreSQL
            // holds unsettled (an under-charge at worst, never a second charge).
            if lock(&account).commit_unconfirmed {
                continue;
            }
            let taken = take(&account, true, true);
            if taken.lease_id.is_some() {
                if taken.to_settle != 0 || !taken.usage.usage.is_empty() {
                    batch.push((account.clone(), taken));
                }
            } else if let Err(error) = self.settle_taken(&account, taken).await {
                tracing::warn!(user_id = %account.user_id, error = %error,
                    "settling on shutdown failed");
            }
        }
        self.settle_in_batches(batch).await;
        if let Err(error) = self.return_every_lease().await {
            tracing::warn!(error = %error, "returning the leases on shutdown failed; they will expire instead");
        }
        if let Err(error) = self.flush_last_used(directory, true).await {
            tracing::warn!(error = %error, "writing last_used_at on shutdown failed");
        }
    }

    /// Ends every lease and key block of this instance, giving their unsettled reserve back.
    async fn return_every_lease(&self) -> Result<(), ledger::LedgerError> {
        let mut transaction = self.pool.begin().await?;
        let users = sqlx::query_scalar!(
            "SELECT DISTINCT user_id FROM credit_leases WHERE instance_id = $1",
            self.terms.instance_id
        )
        .fetch_all(&mut *transaction)
        .await?;
        ledger::lock_accounts(&mut transaction, &users).await?;
        let returned = sqlx::query!(
            r#"WITH ended AS (DELETE FROM credit_leases WHERE instance_id = $1
                              RETURNING user_id, amount - settled AS unsettled)
               SELECT user_id, sum(unsettled)::bigint AS "unsettled!" FROM ended GROUP BY user_id"#,
            self.terms.instance_id
        )
        .fetch_all(&mut *transaction)
        .await?;
        let returned: Vec<(Uuid, i64)> = returned
            .into_iter()
            .map(|row| (row.user_id, row.unsettled))
            .collect();
        ledger::unreserve_many(&mut transaction, &returned).await?;
        sqlx::query!(
            "DELETE FROM key_spend_leases WHERE instance_id = $1",
            self.terms.instance_id
        )
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(())
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
    /// What calls spent of each capped key's block since the last settlement.
    key_spending: Vec<(Uuid, i64)>,
}

/// Takes what `account` has to settle out of its wallet, and moves its tick counters on. When
/// the lease is to go back (`closing`, or idle, and `may_give_back`: the caller holds the
/// account's reservation lock), what it has left leaves the wallet at once, so that no call
/// holds credits of a lease while it is being returned.
fn take(account: &Arc<Account>, closing: bool, may_give_back: bool) -> Taken {
    let mut wallet = lock(account);
    let quiet = wallet.spent_this_tick == 0 && wallet.held == 0;
    wallet.idle_ticks = if quiet { wallet.idle_ticks + 1 } else { 0 };
    wallet.spent_last_tick = wallet.spent_this_tick;
    wallet.spent_this_tick = 0;
    let give_back = may_give_back
        && (closing || wallet.idle_ticks >= idle_ticks_kept(&wallet))
        && wallet.held == 0;
    if give_back {
        wallet.granted = wallet.spent;
    }
    let mut key_spending = Vec::new();
    for (key_id, budget) in &mut wallet.key_budgets {
        if give_back {
            budget.granted = budget.spent + budget.held;
            budget.to_release = 0;
        }
        if budget.spent != budget.settled {
            key_spending.push((*key_id, budget.spent - budget.settled));
        }
    }
    Taken {
        lease_id: wallet.lease_id,
        to_settle: wallet.spent - wallet.settled,
        give_back,
        key_spending,
        usage: PendingUsage {
            account: account.clone(),
            usage: std::mem::take(&mut wallet.usage),
            written: false,
        },
    }
}

/// What a committed settlement of one account changes in its wallet; `returned`: its lease
/// ended (given back, or found gone), so the wallet starts again without one.
fn settled_alone(
    account: &Account,
    to_settle: i64,
    usage: PendingUsage,
    key_spending: &[(Uuid, i64)],
    give_back: bool,
    returned: bool,
) {
    usage.written();
    let mut wallet = lock(account);
    wallet.settled += to_settle;
    settled_keys(&mut wallet, key_spending);
    if give_back {
        forget_returned_blocks(&mut wallet);
    }
    if returned {
        // Calls may have held credits of the lease since the snapshot: what they spend is
        // kept and charged at the next settlement, from the lease then or the balance.
        let spent_since = wallet.spent - wallet.settled;
        *wallet = Wallet {
            spent: spent_since,
            usage: std::mem::take(&mut wallet.usage),
            key_budgets: std::mem::take(&mut wallet.key_budgets),
            available_beyond: wallet.available_beyond + (wallet.granted - wallet.spent),
            held: wallet.held,
            ..Wallet::default()
        };
        if spent_since != 0 || wallet.held != 0 {
            tracing::debug!(user_id = %account.user_id, "calls raced the lease's return");
        }
    }
}

/// Counts what a committed settlement wrote of each key's block as settled.
fn settled_keys(wallet: &mut Wallet, key_spending: &[(Uuid, i64)]) {
    for (key_id, amount) in key_spending {
        if let Some(budget) = wallet.key_budgets.get_mut(key_id) {
            budget.settled += amount;
        }
    }
}

/// After the key blocks went back: a budget keeps only what calls that raced the return hold
/// or spent, to be settled later.
fn forget_returned_blocks(wallet: &mut Wallet) {
    wallet.key_budgets.retain(|_, budget| {
        let spent_since = budget.spent - budget.settled;
        *budget = KeyBudget {
            spent: spent_since,
            held: budget.held,
            ..KeyBudget::default()
        };
        spent_since != 0 || budget.held != 0
    });
}

/// Usage taken out of a wallet to be written; unless it was, it goes back into the wallet when
/// dropped (a failed settlement), to be written with the next one.
struct PendingUsage {
    account: Arc<Account>,
    usage: UsageMap,
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

/// Adds the usage of every account given to `usage_hourly`, in one statement.
async fn write_usage<'a>(
    connection: &mut sqlx::PgConnection,
    usage: impl IntoIterator<Item = (Uuid, &'a UsageMap)>,
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
