//! Credit reservations in batches (issue 18): when many accounts run dry at once (many quiet
//! accounts calling a little each, every one of them cold), their reservations share one
//! statement instead of a transaction each. A single task takes every request queued while the
//! last batch ran, so a lone reservation waits for nobody and a crowd waits for one statement.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::batch::Failure;
use crate::api::is_outage;
use crate::ledger::{self, LeaseRequest};

/// The most accounts reserved in one statement.
const MAX_BATCH: usize = 500;

/// What every lease of this instance shares: whose it is, and how long it lives unrenewed.
#[derive(Clone, Copy, Debug)]
pub(super) struct LeaseTerms {
    pub instance_id: Uuid,
    pub ttl_secs: f64,
}

impl LeaseTerms {
    /// The terms of a new instance.
    pub fn new(lease_ttl: Duration) -> LeaseTerms {
        LeaseTerms {
            instance_id: Uuid::new_v4(),
            ttl_secs: lease_ttl.as_secs_f64(),
        }
    }

    /// The id of this instance's first lease on an account, derived from both: loads of a cold
    /// account that race reserve into one lease, which the wallet that wins takes whole. Later
    /// leases, after a wallet gave its lease back, get new ids (a lease's usage entries are
    /// keyed by its id and the wallet's count of what it settled, which starts again).
    pub fn first_lease_id(&self, user_id: Uuid) -> Uuid {
        Uuid::new_v5(&self.instance_id, user_id.as_bytes())
    }

    /// A reservation for `user_id` whose calls cost `cost` and who spent `pace` credits in the
    /// busier of the last two ticks: two ticks at that pace, at least ten calls; and for an
    /// account with plenty available, up to a hundred calls (at most a 64th of what is
    /// available), so that many quiet accounts with large balances reserve once per hundred
    /// calls instead of once per ten (issue 18: at 10,000 such accounts the reservations were
    /// most of PostgreSQL's work). Near the end of an account's credits the block stays small,
    /// so no instance sits on credits another needs.
    pub fn request(&self, user_id: Uuid, lease_id: Uuid, pace: i64, cost: i64) -> LeaseRequest {
        LeaseRequest {
            user_id,
            lease_id,
            wanted: pace.saturating_mul(2).max(cost.saturating_mul(10)),
            plenty: cost.saturating_mul(100),
            minimum: cost,
        }
    }
}

/// What a reservation gave.
#[derive(Clone, Copy, Debug)]
pub(super) struct Reserved {
    pub granted: i64,
    /// What the account has available beyond every lease after this one.
    pub available_beyond: i64,
    /// The account's credits that other instances' leases hold unsettled.
    pub others_hold: i64,
}

impl Reserved {
    /// What a reservation that did not happen gave.
    pub const NOTHING: Reserved = Reserved {
        granted: 0,
        available_beyond: 0,
        others_hold: 0,
    };
}

type Reply = oneshot::Sender<Result<Reserved, Failure>>;

pub(super) struct Reservations {
    queue: mpsc::UnboundedSender<(LeaseRequest, Reply)>,
}

impl Reservations {
    /// Starts the task that runs the batches (it ends with the last sender).
    pub fn start(pool: PgPool, terms: LeaseTerms) -> Reservations {
        let (queue, requests) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, terms, requests));
        Reservations { queue }
    }

    /// Reserves credits into the account's lease, with whatever other reservations are queued.
    pub async fn reserve(&self, wanted: LeaseRequest) -> Result<Reserved, ledger::LedgerError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || sqlx::Error::WorkerCrashed;
        self.queue.send((wanted, reply)).map_err(|_| stopped())?;
        Ok(answer
            .await
            .map_err(|_| stopped())?
            .map_err(sqlx::Error::from)?)
    }
}

async fn run(
    pool: PgPool,
    terms: LeaseTerms,
    mut requests: mpsc::UnboundedReceiver<(LeaseRequest, Reply)>,
) {
    // A request whose account is already in the batch waits for the next one.
    let mut deferred = Vec::new();
    loop {
        let mut batch: Vec<(LeaseRequest, Reply)> = std::mem::take(&mut deferred);
        if batch.is_empty() {
            match requests.recv().await {
                Some(request) => batch.push(request),
                None => return,
            }
        }
        let mut accounts: HashSet<Uuid> = batch.iter().map(|(wanted, _)| wanted.user_id).collect();
        while batch.len() < MAX_BATCH {
            let Ok(request) = requests.try_recv() else {
                break;
            };
            if accounts.insert(request.0.user_id) {
                batch.push(request);
            } else {
                deferred.push(request);
            }
        }
        let (requests_of_batch, replies): (Vec<LeaseRequest>, Vec<Reply>) =
            batch.into_iter().unzip();
        match reserve_batch(&pool, terms, &requests_of_batch).await {
            Ok(reserved) => {
                for (reply, reserved) in replies.into_iter().zip(reserved) {
                    let _ = reply.send(Ok(reserved));
                }
            }
            Err(error) => {
                let database = match &error {
                    ledger::LedgerError::Database(database) => Some(database),
                    _ => None,
                };
                let failure = Failure {
                    outage: database.is_some_and(is_outage),
                    message: error.to_string(),
                };
                tracing::warn!(accounts = replies.len(), error = %error, "a batch of reservations failed");
                for reply in replies {
                    let _ = reply.send(Err(failure.clone()));
                }
            }
        }
    }
}

fn is_transient(error: &ledger::LedgerError) -> bool {
    match error {
        ledger::LedgerError::Database(sqlx::Error::Database(database)) => {
            matches!(database.code().as_deref(), Some("40P01" | "40001"))
        }
        _ => false,
    }
}

/// Reserves credits into the leases of `batch` (each account at most once): one statement
/// (`ledger::reserve_into_leases`), tried once more after a deadlock or a serialization
/// failure, which says nothing about the requests. What other instances hold is asked
/// afterwards, and only of the accounts left short: it matters only to a call that the grant
/// could not cover (it decides whether to ask them for credits back), and read after the
/// commit it is no older than it would have been inside.
pub(super) async fn reserve_batch(
    pool: &PgPool,
    terms: LeaseTerms,
    batch: &[LeaseRequest],
) -> Result<Vec<Reserved>, ledger::LedgerError> {
    let LeaseTerms {
        instance_id,
        ttl_secs,
    } = terms;
    let mut grants = ledger::reserve_into_leases(pool, instance_id, ttl_secs, batch).await;
    if grants.as_ref().is_err_and(is_transient) {
        grants = ledger::reserve_into_leases(pool, instance_id, ttl_secs, batch).await;
    }
    let grants = grants?;
    let short: Vec<Uuid> = batch
        .iter()
        .zip(&grants)
        .filter(|(wanted, (granted, _))| *granted < wanted.wanted)
        .map(|(wanted, _)| wanted.user_id)
        .collect();
    let others: HashMap<Uuid, i64> = if short.is_empty() {
        HashMap::new()
    } else {
        sqlx::query!(
            r#"SELECT user_id, COALESCE(sum(amount - settled), 0)::bigint AS "held!"
               FROM credit_leases
               WHERE user_id = ANY($1) AND instance_id <> $2 GROUP BY user_id"#,
            &short,
            instance_id
        )
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|row| (row.user_id, row.held))
        .collect()
    };
    Ok(batch
        .iter()
        .zip(grants)
        .map(|(wanted, (granted, available_beyond))| Reserved {
            granted,
            available_beyond,
            others_hold: others.get(&wanted.user_id).copied().unwrap_or(0),
        })
        .collect())
}

/// Gives back grants that no wallet will hold, `(account, lease, granted)`: each lease shrinks by
/// its grant, and the reserve with it; a lease left with nothing ends. Only the grant goes: a
/// first lease may be shared by the wallet that won a race.
pub(super) async fn return_grants(
    pool: &PgPool,
    grants: &[(Uuid, Uuid, i64)],
) -> Result<(), ledger::LedgerError> {
    if grants.is_empty() {
        return Ok(());
    }
    let mut transaction = pool.begin().await?;
    let users: Vec<Uuid> = grants.iter().map(|(user_id, _, _)| *user_id).collect();
    ledger::lock_accounts(&mut transaction, &users).await?;
    let leases: Vec<Uuid> = grants.iter().map(|(_, lease_id, _)| *lease_id).collect();
    let amounts: Vec<i64> = grants.iter().map(|(_, _, granted)| *granted).collect();
    let shrunk: Vec<(Uuid, i64)> = sqlx::query!(
        r#"UPDATE credit_leases l SET amount = l.amount - g.amount
           FROM unnest($1::uuid[], $2::bigint[]) AS g(id, amount)
           WHERE l.id = g.id AND l.amount - l.settled >= g.amount
           RETURNING l.user_id, g.amount AS "amount!""#,
        &leases,
        &amounts
    )
    .fetch_all(&mut *transaction)
    .await?
    .into_iter()
    .map(|row| (row.user_id, row.amount))
    .collect();
    ledger::unreserve_many(&mut transaction, &shrunk).await?;
    // A lease that held only these grants is gone.
    sqlx::query!(
        "DELETE FROM credit_leases WHERE id = ANY($1) AND amount = 0",
        &leases
    )
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(())
}
