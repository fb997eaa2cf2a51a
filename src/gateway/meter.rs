//! Exact credits at proxy speed. An instance reserves credits from an account in blocks (a
//! lease: `credit_accounts.reserved` grows, a `credit_leases` row records it), spends them in
//! memory, settles what was spent into the ledger once per tick (one entry per account, see
//! `settlement.rs`), and gives back what an idle wallet did not spend. A call holds its cost
//! while in flight and is charged only when the upstream answered below 500.
//!
//! Nothing is ever charged that was not reserved, and reserved credits are available credits,
//! so a balance cannot go below zero and a call cannot be charged twice. If an instance dies,
//! its lease stops being renewed; after `lease_ttl` any instance gives the unsettled part back.
//! The worst case is an under-charge of what the dead instance served but had not settled
//! (at most one tick of calls, and never more than its lease), never an over-charge.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::directory::{Account, lock};
use super::key_blocks::{KeyBlocks, release_key_blocks};
use super::reservations::{LeaseTerms, Reservations};
use super::spend_cap::SpendCap;
use super::unconfirmed::UnconfirmedCommits;
use super::wallet::{Shortfall, Wallet, hour_of, usage_entry};
use crate::clock::Clock;
use crate::ledger;

/// After a reservation found no credits, calls answer 40201 without asking again for this long,
/// unless a notification says credits arrived before.
const EMPTY_BACKOFF: Duration = Duration::from_millis(250);
/// A wallet idle for this many ticks gives its unspent reserve back. A quiet account keeps its
/// small lease that long, so its next call finds credits instead of waiting on a reservation;
/// another instance that needs them meanwhile asks for them back (`reclaim:`).
pub(super) const IDLE_TICKS: u32 = 10;
/// A quiet wallet whose lease is small beside what the account has beyond it (at most a
/// sixteenth) keeps it this many ticks instead: nobody is short of those credits, and at 10,000
/// quiet accounts giving leases back after ten idle ticks and reserving again at the next call
/// was most of the reservations (issue 18). Another instance that runs short still asks for
/// them back (`reclaim:`).
pub(super) const SMALL_LEASE_IDLE_TICKS: u32 = 120;

/// How many idle ticks a wallet keeps its lease. A wallet with blocks of capped keys gives them
/// back after `IDLE_TICKS` as before: a block may be most of what its key's cap allows.
pub(super) fn idle_ticks_kept(wallet: &Wallet) -> u32 {
    if wallet.key_budgets.is_empty() && wallet.remaining() <= wallet.available_beyond / 16 {
        SMALL_LEASE_IDLE_TICKS
    } else {
        IDLE_TICKS
    }
}

pub struct Meter {
    pub(super) pool: PgPool,
    pub(super) clock: Arc<Clock>,
    pub(super) terms: LeaseTerms,
    reservations: Reservations,
    pub(super) unconfirmed: UnconfirmedCommits,
}

/// A call's cost, held while the call is in flight. Dropped without `charge` (refused, failed,
/// or abandoned by a client that hung up), it goes back to the wallet (and to its key's block
/// when the key has a spend cap).
pub struct HeldCredits<'a> {
    meter: &'a Meter,
    account: &'a Account,
    cost: i64,
    capped_key: Option<Uuid>,
    charged: bool,
    /// Decided under the hold's lock (`Wallet::wants_top_up`): one lock less per call.
    wants_top_up: bool,
}

impl HeldCredits<'_> {
    /// Whether the lease ran low while the account has plenty beyond it: a background
    /// top-up then keeps calls from waiting on one.
    pub fn wants_top_up(&self) -> bool {
        self.wants_top_up
    }

    /// Charges the held cost and counts the call, made `at`; answers the credits visible
    /// after it.
    pub fn charge(mut self, key_id: Uuid, provider: &str, at: DateTime<Utc>) -> i64 {
        let visible = self.meter.charge(
            self.account,
            self.cost,
            self.capped_key,
            key_id,
            provider,
            at,
        );
        self.charged = true;
        visible
    }
}

impl Drop for HeldCredits<'_> {
    fn drop(&mut self) {
        if !self.charged && self.cost > 0 {
            let mut wallet = lock(self.account);
            wallet.held -= self.cost;
            if let Some(budget) = self
                .capped_key
                .and_then(|key_id| wallet.key_budgets.get_mut(&key_id))
            {
                budget.held -= self.cost;
            }
        }
    }
}

impl Meter {
    /// A meter, and the task that runs its reservations (so it needs a Tokio runtime).
    pub(super) fn new(pool: PgPool, clock: Arc<Clock>, terms: LeaseTerms) -> Meter {
        Meter {
            reservations: Reservations::start(pool.clone(), terms),
            pool,
            clock,
            terms,
            unconfirmed: UnconfirmedCommits::default(),
        }
    }

    fn key_blocks(&self) -> KeyBlocks<'_> {
        KeyBlocks {
            pool: &self.pool,
            clock: &self.clock,
            instance_id: self.terms.instance_id,
            ttl_secs: self.terms.ttl_secs,
        }
    }

    /// Holds `cost` credits for a call (and as much of its key's spend cap, when `cap` names
    /// one), reserving a new block from PostgreSQL when the lease runs short; the shortfall
    /// when the account or the key's cap cannot pay.
    pub async fn hold<'a>(
        &'a self,
        account: &'a Account,
        cost: i64,
        cap: Option<(Uuid, SpendCap)>,
    ) -> Result<Result<HeldCredits<'a>, Shortfall>, ledger::LedgerError> {
        if cost <= 0 {
            return Ok(Ok(self.held(account, cost, cap, false)));
        }
        if let Ok(wants_top_up) = try_hold(account, cost, cap) {
            return Ok(Ok(self.held(account, cost, cap, wants_top_up)));
        }
        // Boxed: the way to PostgreSQL holds large futures, which would otherwise be part of
        // every call's future, moved into a box by actix-web on each call.
        Box::pin(self.hold_after_top_up(account, cost, cap)).await
    }

    fn held<'a>(
        &'a self,
        account: &'a Account,
        cost: i64,
        cap: Option<(Uuid, SpendCap)>,
        wants_top_up: bool,
    ) -> HeldCredits<'a> {
        HeldCredits {
            meter: self,
            account,
            cost,
            capped_key: cap.map(|(key_id, _)| key_id),
            charged: false,
            wants_top_up,
        }
    }

    /// `hold` when the lease cannot cover `cost`: one caller tops it up for all, then holds.
    async fn hold_after_top_up<'a>(
        &'a self,
        account: &'a Account,
        cost: i64,
        cap: Option<(Uuid, SpendCap)>,
    ) -> Result<Result<HeldCredits<'a>, Shortfall>, ledger::LedgerError> {
        // This call tops the lease up itself when it must: no background top-up after it.
        let held = || self.held(account, cost, cap, false);
        let _single_flight = account.top_up.lock().await;
        if try_hold(account, cost, cap).is_ok() {
            return Ok(Ok(held()));
        }
        // The key's cap first: it refuses a call whatever the account holds.
        if let Some((key_id, cap)) = cap
            && let Err(short) = self.key_blocks().cover(account, key_id, cap, cost).await?
        {
            return Ok(Err(short));
        }
        if try_hold(account, cost, cap).is_ok() {
            return Ok(Ok(held()));
        }
        // A reservation that found nothing is believed until credits arrive (a notification
        // clears it) or briefly at most, so a broke account's calls do not each ask PostgreSQL.
        if lock(account)
            .empty_until
            .is_some_and(|until| Instant::now() < until)
        {
            return Ok(Err(Shortfall::Credits));
        }
        let others_hold = self.reserve_block(account, cost).await?;
        if try_hold(account, cost, cap).is_ok() {
            return Ok(Ok(held()));
        }
        if others_hold == 0 {
            return Ok(Err(Shortfall::Credits));
        }
        // Other instances hold the account's credits in their leases: ask them to give back
        // what their calls do not hold, wait (briefly) for it, and reserve again.
        super::signals::reclaim_and_wait(&self.pool, account).await?;
        self.reserve_block(account, cost).await?;
        Ok(try_hold(account, cost, cap).map(|_| held()))
    }

    /// Credits became available: the next call reserves again instead of believing the last
    /// empty reservation, and calls waiting for a reclaim go on.
    pub fn credits_arrived(&self, account: &Account) {
        lock(account).empty_until = None;
        account.credits_arrived.notify_waiters();
    }

    /// Gives back the part of this instance's lease (and of its key blocks) that no call
    /// holds, because another instance needs it: the lease shrinks by that much and the
    /// reserve with it.
    pub async fn give_back_unused(&self, account: &Account) -> Result<(), ledger::LedgerError> {
        // A reservation under way means this instance is short itself; and the two must not
        // race over the same lease.
        let Ok(_reserving) = account.top_up.try_lock() else {
            return Ok(());
        };
        // Taken out at once, so no call holds them while they go back.
        let (lease, unused_of_keys) = {
            let mut wallet = lock(account);
            let unused = wallet.remaining();
            let lease = wallet
                .lease_id
                .filter(|_| unused > 0)
                .map(|id| (id, unused));
            if lease.is_some() {
                wallet.granted -= unused;
            }
            let mut unused_of_keys = Vec::new();
            for (key_id, budget) in &mut wallet.key_budgets {
                let unused = budget.remaining();
                if unused > 0 {
                    budget.granted -= unused;
                    unused_of_keys.push((*key_id, unused));
                }
            }
            (lease, unused_of_keys)
        };
        if lease.is_none() && unused_of_keys.is_empty() {
            return Ok(());
        }
        let returned = async {
            let mut transaction = self.pool.begin().await?;
            // The account first, like every transaction on its credits, its leases or its
            // key blocks.
            ledger::lock_account(&mut transaction, account.user_id).await?;
            if let Some((lease_id, unused)) = lease {
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
            }
            release_key_blocks(
                &mut transaction,
                self.terms.instance_id,
                account.user_id,
                &unused_of_keys,
            )
            .await?;
            transaction.commit().await?;
            Ok::<_, ledger::LedgerError>(())
        }
        .await;
        if returned.is_err() {
            let mut wallet = lock(account);
            if let Some((_, unused)) = lease {
                wallet.granted += unused;
            }
            for (key_id, unused) in unused_of_keys {
                if let Some(budget) = wallet.key_budgets.get_mut(&key_id) {
                    budget.granted += unused;
                }
            }
        }
        returned
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

    /// Reserves a block of credits into the lease (`LeaseTerms::request`), and answers how many
    /// of the account's credits other instances' leases hold unsettled. Callers hold
    /// `account.top_up`.
    async fn reserve_block(
        &self,
        account: &Account,
        cost: i64,
    ) -> Result<i64, ledger::LedgerError> {
        let (lease_id, pace) = {
            let wallet = lock(account);
            // A settlement that may have ended the lease is unanswered: reserving into it now
            // could bring back a lease that is gone, its reserve then held by nobody.
            if wallet.commit_unconfirmed {
                return Err(ledger::LedgerError::OutcomeUnknown);
            }
            (
                wallet.lease_id.unwrap_or_else(Uuid::new_v4),
                wallet.spent_last_tick.max(wallet.spent_this_tick),
            )
        };
        let request = self.terms.request(account.user_id, lease_id, pace, cost);
        let reserved = self.reservations.reserve(request).await?;
        let (granted, available) = (reserved.granted, reserved.available_beyond);
        let mut wallet = lock(account);
        wallet.available_beyond = available;
        if granted == 0 {
            wallet.empty_until = Some(Instant::now() + EMPTY_BACKOFF);
        } else {
            wallet.lease_id = Some(lease_id);
            wallet.granted += granted;
            wallet.empty_until = None;
        }
        Ok(reserved.others_hold)
    }

    /// Charges a held call and counts it.
    fn charge(
        &self,
        account: &Account,
        cost: i64,
        capped_key: Option<Uuid>,
        key_id: Uuid,
        provider: &str,
        at: DateTime<Utc>,
    ) -> i64 {
        let mut wallet = lock(account);
        if cost > 0 {
            wallet.held -= cost;
            wallet.spent += cost;
            wallet.spent_this_tick += cost;
            if let Some(budget) = capped_key.and_then(|key_id| wallet.key_budgets.get_mut(&key_id))
            {
                budget.held -= cost;
                budget.spent += cost;
            }
        }
        let usage = usage_entry(&mut wallet.usage, key_id, provider, hour_of(at));
        usage.calls += 1;
        usage.credits += cost;
        wallet.visible_credits()
    }

    /// Counts a call, made `at`, that the upstream failed (not charged).
    pub fn count_error(&self, account: &Account, key_id: Uuid, provider: &str, at: DateTime<Utc>) {
        let mut wallet = lock(account);
        usage_entry(&mut wallet.usage, key_id, provider, hour_of(at)).errors += 1;
    }
}

/// Holds `cost` of the wallet's lease and of the key's block, both or neither; answers whether
/// the lease wants a background top-up.
fn try_hold(
    account: &Account,
    cost: i64,
    cap: Option<(Uuid, SpendCap)>,
) -> Result<bool, Shortfall> {
    let mut wallet = lock(account);
    if let Some((key_id, cap)) = cap
        && !wallet
            .key_budgets
            .get(&key_id)
            .is_some_and(|budget| budget.covers(cap, cost))
    {
        return Err(Shortfall::SpendCap);
    }
    if wallet.remaining() < cost {
        return Err(Shortfall::Credits);
    }
    wallet.held += cost;
    if let Some(budget) = cap.and_then(|(key_id, _)| wallet.key_budgets.get_mut(&key_id)) {
        budget.held += cost;
    }
    Ok(wallet.wants_top_up(cost))
}
