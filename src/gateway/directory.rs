//! What the gateway knows about keys and accounts, kept in memory so a call needs no query:
//! a key's digest leads to its entry and its account (status, plan limits, limit state and
//! credit wallet). Changes arrive as notifications (`signals.rs`) within milliseconds; a
//! refresher still reloads revocations, account status and plan limits every five seconds,
//! in case a notification was lost.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use sqlx::PgPool;
use uuid::Uuid;

use super::batch::Batched;
use super::cold::{self, AccountLoad, AccountRecord, ColdKey, KeyLoad, KeyRecord};
use super::limits::{MONTH_COUNTER_TTL, PlanLimits, month_of};
use super::near_keys::{Forgettable, NearKeys};
use super::reservations::{LeaseTerms, return_grants};
use super::spend_cap::SpendCap;
use super::wallet::Wallet;
use crate::auth::users;
use crate::clock::Clock;
use crate::limits::{Bundle, LocalCells, Quota, Rate};
use crate::plans;

/// A key the gateway has seen.
pub struct KeyEntry {
    pub key_id: Uuid,
    pub user_id: Uuid,
    pub revoked: AtomicBool,
    /// The directory no longer holds this entry (its controls or its secret changed, or it was
    /// revoked): the workers' copies (`near_keys.rs`) are dropped, and the next call loads it.
    forgotten: AtomicBool,
    /// Unix seconds of the last call, written to the database by the meter's tick.
    pub last_used: AtomicI64,
    pub last_flushed: AtomicI64,
    /// The client address of the last call, written with `last_used`.
    pub last_ip: Mutex<Option<IpAddr>>,
    /// `last_ip` when it is an IPv4 address (`1 << 32` beside it), else 0: read before the
    /// lock, so a call from the same address as the last writes nothing. A line that every
    /// call writes is one that the other workers' calls with the key must fetch again.
    last_ipv4: AtomicU64,
    /// What the key's owner allowed it; a change reloads the entry.
    pub controls: KeyControls,
    /// `changed_at` of the row this entry was loaded from (microseconds).
    pub changed_at: i64,
}

/// A key's own limits, all optional.
#[derive(Debug, Default)]
pub struct KeyControls {
    /// Unix seconds after which the key (or, after a rotation, its previous secret) is refused.
    pub expires_at: Option<i64>,
    /// Calls a second, below the plan's.
    pub rps: Option<u32>,
    /// The providers it may call; None: all.
    pub providers: Option<Vec<String>>,
    /// The client networks it may be used from; None: any.
    pub allowed_ips: Option<Vec<IpNet>>,
    /// The most it may spend, per month or in total.
    pub spend_cap: Option<SpendCap>,
}

impl KeyControls {
    pub fn expired(&self, now_secs: i64) -> bool {
        self.expires_at.is_some_and(|at| now_secs >= at)
    }

    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        self.allowed_ips
            .as_ref()
            .is_none_or(|networks| networks.iter().any(|network| network.contains(&ip)))
    }

    pub fn allows_provider(&self, slug: &str) -> bool {
        self.providers
            .as_ref()
            .is_none_or(|providers| providers.iter().any(|allowed| allowed == slug))
    }
}

impl KeyEntry {
    /// Whether the directory keeps it, marking it forgotten when not.
    fn kept(&self, keep: bool) -> bool {
        if !keep {
            self.forgotten.store(true, Ordering::Relaxed);
        }
        keep
    }

    /// Keeps `ip` as the client address of the last call.
    pub fn note_client(&self, ip: IpAddr) {
        let ipv4 = match ip {
            IpAddr::V4(v4) => 1 << 32 | u64::from(u32::from(v4)),
            IpAddr::V6(_) => 0,
        };
        if ipv4 != 0 && self.last_ipv4.load(Ordering::Relaxed) == ipv4 {
            return;
        }
        let mut last_ip = self.last_ip.lock().unwrap_or_else(|p| p.into_inner());
        *last_ip = Some(ip);
        // Under the lock, so that it always names the address the lock holds.
        self.last_ipv4.store(ipv4, Ordering::Relaxed);
    }
}

impl From<KeyRecord> for KeyEntry {
    fn from(record: KeyRecord) -> KeyEntry {
        KeyEntry {
            key_id: record.key_id,
            user_id: record.user_id,
            revoked: AtomicBool::new(false),
            forgotten: AtomicBool::new(false),
            last_used: AtomicI64::new(record.last_used),
            last_flushed: AtomicI64::new(record.last_used),
            last_ip: Mutex::new(None),
            last_ipv4: AtomicU64::new(0),
            controls: KeyControls {
                expires_at: record.expires_at,
                rps: record.rps,
                providers: record.providers,
                allowed_ips: record.allowed_ips,
                spend_cap: record.spend_cap,
            },
            changed_at: record.changed_at,
        }
    }
}

/// An account the gateway has seen.
pub struct Account {
    pub user_id: Uuid,
    pub frozen: AtomicBool,
    limits: SharedLimits,
    /// Names the account's limits in the shared limiter.
    pub limit_key: String,
    pub limit_state: Arc<Mutex<LocalCells>>,
    /// The month's charged calls that PostgreSQL knew of when the account was loaded, and that
    /// month (a later month starts from zero).
    pub month_seed: AtomicI64,
    pub seed_month: u32,
    pub wallet: Mutex<Wallet>,
    /// Held while credits are being reserved from PostgreSQL, so one call does it for all.
    pub top_up: tokio::sync::Mutex<()>,
    /// Woken when more credits became available (a top-up, a lease given back).
    pub credits_arrived: tokio::sync::Notify,
}

/// An account's plan limits, read by every call without a lock (a read lock writes its count,
/// on a line every worker's calls then share). Each limit is its own atomic: a call during a
/// plan change may see one limit of the old plan beside another of the new, each a limit the
/// account had.
struct SharedLimits {
    rps: AtomicU32,
    rph: AtomicU32,
    /// The monthly quota; `NO_QUOTA`: none.
    monthly_quota: AtomicI64,
}

const NO_QUOTA: i64 = -1;

impl SharedLimits {
    fn new(limits: PlanLimits) -> SharedLimits {
        let shared = SharedLimits {
            rps: AtomicU32::new(0),
            rph: AtomicU32::new(0),
            monthly_quota: AtomicI64::new(NO_QUOTA),
        };
        shared.set(limits);
        shared
    }

    fn get(&self) -> PlanLimits {
        let quota = self.monthly_quota.load(Ordering::Relaxed);
        PlanLimits {
            rps: self.rps.load(Ordering::Relaxed),
            rph: self.rph.load(Ordering::Relaxed),
            monthly_quota: (quota != NO_QUOTA).then_some(quota),
        }
    }

    /// Written only when they changed: every account's limits are read again every few
    /// seconds, and a write makes every worker fetch the line again.
    fn set(&self, limits: PlanLimits) {
        if self.get() != limits {
            self.rps.store(limits.rps, Ordering::Relaxed);
            self.rph.store(limits.rph, Ordering::Relaxed);
            let quota = limits.monthly_quota.map_or(NO_QUOTA, |quota| quota.max(0));
            self.monthly_quota.store(quota, Ordering::Relaxed);
        }
    }
}

impl Account {
    pub fn limits(&self) -> PlanLimits {
        self.limits.get()
    }

    /// The limiter's bundle of a call in `month` under `limits` (the plan's, read once per
    /// call), whose rates are `rates`.
    pub fn limit_bundle<'a>(
        &'a self,
        limits: PlanLimits,
        rates: &'a [Rate; 2],
        month: u32,
    ) -> Bundle<'a> {
        Bundle {
            class: "gateway",
            key: &self.limit_key,
            rates,
            quota: Some(Quota {
                limit: limits.monthly_quota,
                period: month,
                seed: if month == self.seed_month {
                    self.month_seed.load(Ordering::Relaxed)
                } else {
                    0
                },
                ttl: MONTH_COUNTER_TTL,
            }),
            cells: &self.limit_state,
            leased: true,
        }
    }
}

/// Unknown digests are remembered briefly, so a flood of bad keys does not reach the database.
const NEGATIVE_TTL: Duration = Duration::from_secs(1);
const MAX_NEGATIVE: usize = 100_000;

pub struct Directory {
    pool: PgPool,
    clock: Arc<Clock>,
    /// `BILLING_GRACE_DAYS`, for the plan that applies to an account.
    billing_grace: chrono::Duration,
    /// The plans accounts are on, read again whenever limits are (`refresh_limits`).
    plans: Arc<plans::Catalog>,
    keys: RwLock<HashMap<Vec<u8>, Arc<KeyEntry>>>,
    /// Each worker's copy of the keys its calls found in `keys`.
    near: NearKeys<Known>,
    /// Shared with the loader of cold keys, which loads the accounts it does not find here.
    accounts: Arc<RwLock<HashMap<Uuid, Arc<Account>>>>,
    unknown: Mutex<HashMap<Vec<u8>, Instant>>,
    /// Cold keys (with their cold accounts) and accounts, loaded together when many arrive at
    /// once.
    cold_keys: Batched<KeyLoad, ColdKey>,
    cold_accounts: Batched<AccountLoad, AccountRecord>,
}

/// A key and its account, as a worker keeps them (`near_keys.rs`).
pub struct Known {
    pub key: Arc<KeyEntry>,
    pub account: Arc<Account>,
}

impl Forgettable for Known {
    fn is_forgotten(&self) -> bool {
        self.key.forgotten.load(Ordering::Relaxed)
    }
}

pub enum Lookup {
    Found(Arc<Known>),
    /// Unknown or revoked.
    Unknown,
    /// Not in the caches: only a query can tell.
    NotCached,
}

impl Directory {
    /// Starts the tasks that load cold keys and accounts (they end with the directory); a cold
    /// account's first lease is reserved on `terms`.
    pub(super) fn new(
        pool: PgPool,
        clock: Arc<Clock>,
        billing_grace: chrono::Duration,
        terms: LeaseTerms,
    ) -> Directory {
        let plans = Arc::new(plans::Catalog::default());
        let accounts: Arc<RwLock<HashMap<Uuid, Arc<Account>>>> = Arc::default();
        let (key_pool, key_clock, key_plans, known) =
            (pool.clone(), clock.clone(), plans.clone(), accounts.clone());
        let cold_keys = Batched::start("keys", move |calls| {
            let (pool, now, plans, known) = (
                key_pool.clone(),
                key_clock.now(),
                key_plans.clone(),
                known.clone(),
            );
            let is_cold = move |user_id| {
                !known
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains_key(&user_id)
            };
            async move {
                cold::keys_and_accounts(&pool, &plans, calls, is_cold, now, billing_grace, terms)
                    .await
            }
        });
        let (account_pool, account_clock, account_plans) =
            (pool.clone(), clock.clone(), plans.clone());
        let cold_accounts = Batched::start("accounts", move |loads| {
            let (pool, now, plans) = (
                account_pool.clone(),
                account_clock.now(),
                account_plans.clone(),
            );
            async move { cold::accounts(&pool, &plans, loads, now, billing_grace, terms).await }
        });
        Directory {
            cold_keys,
            cold_accounts,
            pool,
            clock,
            billing_grace,
            plans,
            keys: RwLock::default(),
            near: NearKeys::default(),
            accounts,
            unknown: Mutex::default(),
        }
    }

    /// What the caches know of the key with `digest`, with its account; revoked keys count as
    /// unknown. No query, but for the account of a known key on first use (with its first
    /// lease when the call named what it costs, `first_cost` > 0).
    pub async fn cached(&self, digest: &[u8], first_cost: i64) -> Result<Lookup, sqlx::Error> {
        if let Some(known) = self.near.get(digest) {
            if known.key.revoked.load(Ordering::Relaxed) {
                return Ok(Lookup::Unknown);
            }
            return Ok(Lookup::Found(known));
        }
        let cached = self
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest)
            .cloned();
        match cached {
            Some(entry) => self.found(digest, entry, first_cost, None).await,
            None if self.recently_unknown(digest) => Ok(Lookup::Unknown),
            None => Ok(Lookup::NotCached),
        }
    }

    /// The key with `digest` from PostgreSQL, remembered either way.
    pub async fn load(&self, digest: &[u8], first_cost: i64) -> Result<Lookup, sqlx::Error> {
        match self.load_key(digest, first_cost).await? {
            Some((entry, loaded)) => self.found(digest, entry, first_cost, loaded).await,
            // Unknown or revoked: remembered as bad for a moment, never kept as a key.
            None => {
                self.remember_unknown(digest.to_vec());
                Ok(Lookup::Unknown)
            }
        }
    }

    /// The key's lookup with its account: the one `loaded` with the key (kept even for a key
    /// revoked meanwhile, so its first lease is not stranded), else the cached or loaded one.
    /// This worker keeps a copy of what it found.
    async fn found(
        &self,
        digest: &[u8],
        entry: Arc<KeyEntry>,
        first_cost: i64,
        loaded: Option<AccountRecord>,
    ) -> Result<Lookup, sqlx::Error> {
        let installed = loaded.map(|record| self.install(entry.user_id, record));
        if entry.revoked.load(Ordering::Relaxed) {
            return Ok(Lookup::Unknown);
        }
        let account = match installed {
            Some(account) => account,
            None => self.account(entry.user_id, first_cost).await?,
        };
        let known = Arc::new(Known {
            key: entry,
            account,
        });
        self.near.keep(digest, known.clone());
        Ok(Lookup::Found(known))
    }

    fn recently_unknown(&self, digest: &[u8]) -> bool {
        let unknown = self.unknown.lock().unwrap_or_else(|p| p.into_inner());
        unknown
            .get(digest)
            .is_some_and(|at| at.elapsed() < NEGATIVE_TTL)
    }

    /// Remembers a bad digest for a moment; the memory is bounded: when a flood of distinct
    /// keys fills it even after the expired ones left, it starts again empty.
    fn remember_unknown(&self, digest: Vec<u8>) {
        let mut unknown = self.unknown.lock().unwrap_or_else(|p| p.into_inner());
        if unknown.len() >= MAX_NEGATIVE {
            unknown.retain(|_, at| at.elapsed() < NEGATIVE_TTL);
            if unknown.len() >= MAX_NEGATIVE {
                unknown.clear();
            }
        }
        unknown.insert(digest, Instant::now());
    }

    /// The key whose secret, or previous secret within its rotation's grace, has `digest`, and
    /// its account's load (with a first lease for `first_cost`) when the account was cold.
    async fn load_key(
        &self,
        digest: &[u8],
        first_cost: i64,
    ) -> Result<Option<(Arc<KeyEntry>, Option<AccountRecord>)>, sqlx::Error> {
        let Some(ColdKey { key, account }) =
            self.cold_keys.get((digest.to_vec(), first_cost)).await?
        else {
            return Ok(None);
        };
        let entry = Arc::new(KeyEntry::from(key));
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let entry = keys.entry(digest.to_vec()).or_insert(entry).clone();
        Ok(Some((entry, account)))
    }

    /// The account, loaded on first use, with a first lease for calls that cost `first_cost`
    /// when that is above zero.
    pub async fn account(
        &self,
        user_id: Uuid,
        first_cost: i64,
    ) -> Result<Arc<Account>, sqlx::Error> {
        if let Some(account) = self.cached_account(user_id) {
            return Ok(account);
        }
        let record = match self.cold_accounts.get((user_id, first_cost)).await? {
            Some(record) => record,
            None => AccountRecord {
                frozen: true,
                limits: PlanLimits::of(None),
                month_calls: 0,
                month: month_of(self.clock.now()),
                first_lease: None,
                available: 0,
            },
        };
        Ok(self.install(user_id, record))
    }

    /// Keeps the account as `record` loaded it, unless another load kept it first.
    fn install(&self, user_id: Uuid, record: AccountRecord) -> Arc<Account> {
        let AccountRecord {
            frozen,
            limits,
            month_calls,
            month,
            first_lease,
            available,
        } = record;
        let mut accounts = self.accounts.write().unwrap_or_else(|p| p.into_inner());
        match accounts.entry(user_id) {
            std::collections::hash_map::Entry::Occupied(loaded) => {
                self.settle_raced_grant(user_id, loaded.get(), first_lease);
                loaded.get().clone()
            }
            std::collections::hash_map::Entry::Vacant(vacant) => {
                let mut wallet = Wallet::knowing(available);
                if let Some((lease_id, reserved)) = first_lease.and_then(|first| first.take()) {
                    wallet.adopt(lease_id, reserved);
                }
                let account = Arc::new(Account {
                    user_id,
                    frozen: AtomicBool::new(frozen),
                    limits: SharedLimits::new(limits),
                    limit_key: user_id.to_string(),
                    limit_state: Arc::new(Mutex::new(LocalCells::seeded(month, month_calls))),
                    month_seed: AtomicI64::new(month_calls),
                    seed_month: month,
                    wallet: Mutex::new(wallet),
                    top_up: tokio::sync::Mutex::new(()),
                    credits_arrived: tokio::sync::Notify::new(),
                });
                vacant.insert(account).clone()
            }
        }
    }

    /// Another load of the account won the race. While its wallet still holds the first lease,
    /// this load's grant is in that lease too and the wallet takes it; otherwise it goes back.
    fn settle_raced_grant(
        &self,
        user_id: Uuid,
        winner: &Account,
        first_lease: Option<Arc<cold::FirstLease>>,
    ) {
        let Some((lease_id, reserved)) = first_lease.and_then(|first| first.take()) else {
            return;
        };
        if reserved.granted <= 0 {
            return;
        }
        let mut wallet = lock(winner);
        if wallet.lease_id == Some(lease_id) {
            wallet.adopt(lease_id, reserved);
            return;
        }
        let pool = self.pool.clone();
        let grant = [(user_id, lease_id, reserved.granted)];
        tokio::spawn(async move {
            if let Err(error) = return_grants(&pool, &grant).await {
                tracing::warn!(%user_id, error = %error,
                    "returning a raced first lease failed; it ends with the lease");
            }
        });
    }

    /// The account if this instance has it in memory.
    pub fn cached_account(&self, user_id: Uuid) -> Option<Arc<Account>> {
        self.accounts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&user_id)
            .cloned()
    }

    /// Reloads one cached account's status and plan limits (a freeze, a subscription), with
    /// the same look-up as a cold account's.
    pub async fn refresh_account(&self, user_id: Uuid) -> Result<(), sqlx::Error> {
        let Some(account) = self.cached_account(user_id) else {
            return Ok(());
        };
        let Some(record) = self.cold_accounts.get((user_id, 0)).await? else {
            return Ok(());
        };
        account.frozen.store(record.frozen, Ordering::Relaxed);
        account.limits.set(record.limits);
        Ok(())
    }

    pub fn cached_accounts(&self) -> Vec<Arc<Account>> {
        self.accounts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn cached_keys(&self) -> Vec<Arc<KeyEntry>> {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Forgets a key whose controls or secret changed: its next call loads it again.
    pub fn forget_key(&self, key_id: Uuid) {
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, entry| entry.kept(entry.key_id != key_id));
    }

    /// Marks a key revoked at once on this instance (the others learn it at their next refresh).
    pub fn revoke_key(&self, key_id: Uuid) {
        for entry in self.cached_keys() {
            if entry.key_id == key_id {
                entry.revoked.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Applies a status change at once on this instance.
    pub fn set_frozen(&self, user_id: Uuid, frozen: bool) {
        if let Some(account) = self
            .accounts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&user_id)
        {
            account.frozen.store(frozen, Ordering::Relaxed);
        }
    }

    /// Reloads revocations and account status.
    pub async fn refresh_status(&self) -> Result<(), sqlx::Error> {
        let keys = self.cached_keys();
        if !keys.is_empty() {
            let ids: Vec<Uuid> = keys.iter().map(|entry| entry.key_id).collect();
            let live: HashMap<Uuid, i64> = sqlx::query!(
                r#"SELECT id, (extract(epoch FROM changed_at) * 1000000)::bigint AS "changed_at!"
                   FROM api_keys WHERE id = ANY($1) AND revoked_at IS NULL"#,
                &ids
            )
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|row| (row.id, row.changed_at))
            .collect();
            for entry in &keys {
                entry
                    .revoked
                    .store(!live.contains_key(&entry.key_id), Ordering::Relaxed);
            }
            // Revoked keys leave the cache: a key's digest is kept only while it may be used;
            // a key whose controls changed is loaded again by its next call.
            self.keys
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|_, entry| entry.kept(live.get(&entry.key_id) == Some(&entry.changed_at)));
        }
        let accounts = self.cached_accounts();
        if !accounts.is_empty() {
            let ids: Vec<Uuid> = accounts.iter().map(|account| account.user_id).collect();
            // A set: a list's `contains` made this loop quadratic in the accounts held.
            let active: HashSet<Uuid> = users::active_among(&self.pool, &ids)
                .await?
                .into_iter()
                .collect();
            for account in &accounts {
                account
                    .frozen
                    .store(!active.contains(&account.user_id), Ordering::Relaxed);
            }
        }
        let mut unknown = self.unknown.lock().unwrap_or_else(|p| p.into_inner());
        unknown.retain(|_, at| at.elapsed() < NEGATIVE_TTL);
        Ok(())
    }

    /// Reads the plans again, and reloads every cached account's plan limits: a few queries
    /// for all of them. Called when a plan or many accounts may have changed (a notification,
    /// a reconnect) and every few seconds, which bounds how long a plan is kept.
    pub async fn refresh_limits(&self) -> Result<(), sqlx::Error> {
        self.plans.forget();
        let accounts = self.cached_accounts();
        let users: Vec<Uuid> = accounts.iter().map(|account| account.user_id).collect();
        for chunk in users.chunks(5000) {
            let now = self.clock.now();
            let plans = crate::payment::account_plans(
                &self.pool,
                &self.plans,
                chunk,
                now,
                self.billing_grace,
            )
            .await?;
            for (user_id, plan) in plans {
                if let Some(account) = self.cached_account(user_id) {
                    account.limits.set(PlanLimits::of(plan));
                }
            }
        }
        Ok(())
    }
}

/// The account's wallet, locked (a panic while it was held leaves it usable).
pub(super) fn lock(account: &Account) -> std::sync::MutexGuard<'_, Wallet> {
    account
        .wallet
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
}
