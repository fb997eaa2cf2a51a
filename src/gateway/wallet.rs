//! An account's credits on this instance, and the usage it has not settled yet. The meter
//! (`meter.rs`) is what moves them.

use std::collections::HashMap;
use std::time::Instant;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::reservations::Reserved;
use super::spend_cap::SpendCap;

/// Why a call's cost cannot be held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shortfall {
    /// The account's credits do not cover it (40201).
    Credits,
    /// The key's spend cap does not (40305).
    SpendCap,
}

/// Calls aggregated per key, provider and hour until the next settlement.
#[derive(Clone, Copy, Debug, Default)]
pub struct UsageDelta {
    pub calls: i64,
    pub credits: i64,
    pub errors: i64,
}

pub type UsageKey = (Uuid, String, DateTime<Utc>);

/// Calls counted per key, provider and hour. Hashed with foldhash instead of SipHash: every
/// call looks its entry up, and the keys are the service's own (key ids, provider slugs,
/// hours), never a stranger's input, so SipHash's resistance to chosen collisions buys nothing.
pub type UsageMap = hashbrown::HashMap<UsageKey, UsageDelta, foldhash::fast::RandomState>;

/// A `UsageKey` with its provider borrowed: hashed as the tuple is (each field in turn), so a
/// call finds its entry without copying the provider's name, which only a new entry needs.
#[derive(Hash)]
struct UsageKeyRef<'a>(Uuid, &'a str, DateTime<Utc>);

impl hashbrown::Equivalent<UsageKey> for UsageKeyRef<'_> {
    fn equivalent(&self, key: &UsageKey) -> bool {
        self.0 == key.0 && self.1 == key.1 && self.2 == key.2
    }
}

/// The hour `at` falls in, which its usage is counted under.
pub fn hour_of(at: DateTime<Utc>) -> DateTime<Utc> {
    let secs = at.timestamp();
    DateTime::from_timestamp(secs - secs.rem_euclid(3600), 0).unwrap_or(at)
}

/// The usage entry of a key's calls to a provider in an hour, made when new.
pub fn usage_entry<'a>(
    usage: &'a mut UsageMap,
    key_id: Uuid,
    provider: &str,
    hour: DateTime<Utc>,
) -> &'a mut UsageDelta {
    usage
        .entry_ref(&UsageKeyRef(key_id, provider, hour))
        .or_default()
}

impl From<&UsageKeyRef<'_>> for UsageKey {
    fn from(key: &UsageKeyRef<'_>) -> UsageKey {
        (key.0, key.1.to_owned(), key.2)
    }
}

/// An account's credits on this instance.
#[derive(Debug, Default)]
pub struct Wallet {
    pub(super) lease_id: Option<Uuid>,
    /// Reserved into the current lease.
    pub(super) granted: i64,
    /// Charged (upstream answered below 500).
    pub(super) spent: i64,
    /// Held by calls in flight.
    pub(super) held: i64,
    /// Spent and already written to the ledger.
    pub(super) settled: i64,
    /// What PostgreSQL had available beyond the lease at the last reservation.
    pub(super) available_beyond: i64,
    /// After a reservation found nothing, when to try again.
    pub(super) empty_until: Option<Instant>,
    /// Spent during the current and the previous tick: they size the next block.
    pub(super) spent_this_tick: i64,
    pub(super) spent_last_tick: i64,
    pub(super) idle_ticks: u32,
    pub(super) usage: UsageMap,
    /// The blocks of the account's keys that have a spend cap.
    pub(super) key_budgets: HashMap<Uuid, KeyBudget>,
    /// A settlement of this wallet went unanswered at COMMIT (`unconfirmed.rs`): it is not
    /// settled again until PostgreSQL tells whether that one committed.
    pub(super) commit_unconfirmed: bool,
}

impl Wallet {
    /// An empty wallet of an account that had `available` credits beyond every lease when it
    /// was loaded.
    pub(super) fn knowing(available: i64) -> Wallet {
        Wallet {
            available_beyond: available,
            ..Wallet::default()
        }
    }

    /// Takes a reservation made into the lease `lease_id` outside `Meter::hold` (a cold
    /// account's first lease, reserved with its load). A reservation that gave nothing leaves
    /// the call to reserve on its own, and to ask other instances for credits if they hold them.
    pub(super) fn adopt(&mut self, lease_id: Uuid, reserved: Reserved) {
        self.available_beyond = reserved.available_beyond;
        if reserved.granted > 0 {
            self.lease_id = Some(lease_id);
            self.granted += reserved.granted;
        }
    }

    pub(super) fn remaining(&self) -> i64 {
        self.granted - self.spent - self.held
    }

    /// Whether the lease is running low while the account has plenty beyond it: then a
    /// background top-up keeps calls from waiting on one. Near the end of an account's credits
    /// top-ups stay on the call's path, so no instance sits on the last credits another needs.
    pub(super) fn wants_top_up(&self, cost: i64) -> bool {
        let pace = self
            .spent_last_tick
            .max(self.spent_this_tick)
            .max(cost.saturating_mul(10));
        self.lease_id.is_some()
            && self.remaining() < pace / 2
            && self.available_beyond > pace.saturating_mul(4)
    }

    /// Credits this instance can still see for the account: its lease and what the database
    /// had beyond it.
    pub fn visible_credits(&self) -> i64 {
        self.remaining().max(0) + self.available_beyond.max(0)
    }
}

/// This instance's share of a capped key's credits: its block (`key_spend_leases`) and what
/// calls did with it, counted like the account's wallet.
#[derive(Debug, Default)]
pub struct KeyBudget {
    /// The cap the block was reserved under: once the key's cap changes, the block's unspent
    /// part is dropped and a new one reserved under the new cap.
    pub(super) cap: Option<SpendCap>,
    pub(super) granted: i64,
    pub(super) spent: i64,
    pub(super) held: i64,
    pub(super) settled: i64,
    /// Dropped from `granted` (the cap changed) and still to be taken off the block's row.
    pub(super) to_release: i64,
    /// After a reservation found the cap spent, when to try again.
    pub(super) spent_until: Option<Instant>,
}

impl KeyBudget {
    pub(super) fn remaining(&self) -> i64 {
        self.granted - self.spent - self.held
    }

    pub(super) fn covers(&self, cap: SpendCap, cost: i64) -> bool {
        self.cap == Some(cap) && self.remaining() >= cost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_calls_usage_is_found_by_its_borrowed_key_and_counted_once_per_key_provider_and_hour() {
        let mut usage = UsageMap::default();
        let key = Uuid::new_v4();
        let at = DateTime::parse_from_rfc3339("2026-12-01T18:59:59.900Z")
            .unwrap()
            .to_utc();
        let hour = hour_of(at);
        assert_eq!(hour.to_rfc3339(), "2026-12-01T18:00:00+00:00");
        for provider in ["weather", "weather", "maps"] {
            usage_entry(&mut usage, key, provider, hour).calls += 1;
        }
        usage_entry(
            &mut usage,
            key,
            "weather",
            hour_of(at + chrono::Duration::seconds(1)),
        )
        .calls += 1;
        assert_eq!(usage.len(), 3);
        assert_eq!(usage[&(key, "weather".to_owned(), hour)].calls, 2);
        assert_eq!(usage[&(key, "maps".to_owned(), hour)].calls, 1);
    }
}
