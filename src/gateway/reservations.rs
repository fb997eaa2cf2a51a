//! Credit reservations in batches (issue 18): when many accounts run dry at once (many quiet
//! accounts calling a little each, every one of them cold), their reservations share one
//! transaction instead of one each. A single task takes every request queued while the last
//! batch ran, so a lone reservation waits for nobody and a crowd waits for one transaction.

use std::collections::HashSet;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::batch::Failure;
use crate::api::is_outage;
use crate::ledger;

/// The most accounts reserved in one transaction.
const MAX_BATCH: usize = 500;

/// What an account's lease needs.
pub(super) struct Wanted {
    pub user_id: Uuid,
    pub lease_id: Uuid,
    /// Credits wanted, and the fewest worth granting.
    pub amount: i64,
    pub minimum: i64,
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

type Reply = oneshot::Sender<Result<Reserved, Failure>>;

pub(super) struct Reservations {
    queue: mpsc::UnboundedSender<(Wanted, Reply)>,
}

impl Reservations {
    /// Starts the task that runs the batches (it ends with the last sender).
    pub fn start(pool: PgPool, instance_id: Uuid, lease_ttl_secs: f64) -> Reservations {
        let (queue, requests) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, instance_id, lease_ttl_secs, requests));
        Reservations { queue }
    }

    /// Reserves credits into the account's lease, with whatever other reservations are queued.
    pub async fn reserve(&self, wanted: Wanted) -> Result<Reserved, ledger::LedgerError> {
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
    instance_id: Uuid,
    lease_ttl_secs: f64,
    mut requests: mpsc::UnboundedReceiver<(Wanted, Reply)>,
) {
    // A request whose account is already in the batch waits for the next one.
    let mut deferred = Vec::new();
    loop {
        let mut batch: Vec<(Wanted, Reply)> = std::mem::take(&mut deferred);
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
        let wanted: Vec<&Wanted> = batch.iter().map(|(wanted, _)| wanted).collect();
        let mut outcome = reserve_batch(&pool, instance_id, lease_ttl_secs, &wanted).await;
        // A deadlock or serialization failure says nothing about the requests: once more.
        if outcome.as_ref().is_err_and(is_transient) {
            outcome = reserve_batch(&pool, instance_id, lease_ttl_secs, &wanted).await;
        }
        match outcome {
            Ok(reserved) => {
                for ((_, reply), reserved) in batch.into_iter().zip(reserved) {
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
                tracing::warn!(accounts = batch.len(), error = %error, "a batch of reservations failed");
                for (_, reply) in batch {
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

/// One transaction: the credits (`ledger::reserve_many`), the leases, and what other
/// instances hold of each account.
async fn reserve_batch(
    pool: &PgPool,
    instance_id: Uuid,
    lease_ttl_secs: f64,
    batch: &[&Wanted],
) -> Result<Vec<Reserved>, ledger::LedgerError> {
    let requests: Vec<(Uuid, i64, i64)> = batch
        .iter()
        .map(|wanted| (wanted.user_id, wanted.amount, wanted.minimum))
        .collect();
    let mut transaction = pool.begin().await?;
    let grants = ledger::reserve_many(&mut transaction, &requests).await?;
    let (mut lease_ids, mut users, mut amounts) = (Vec::new(), Vec::new(), Vec::new());
    for (wanted, (granted, _)) in batch.iter().zip(&grants) {
        if *granted > 0 {
            lease_ids.push(wanted.lease_id);
            users.push(wanted.user_id);
            amounts.push(*granted);
        }
    }
    if !lease_ids.is_empty() {
        sqlx::query!(
            r#"INSERT INTO credit_leases (id, user_id, instance_id, amount, expires_at)
               SELECT l.id, l.user_id, $4, l.amount, now() + make_interval(secs => $5)
               FROM unnest($1::uuid[], $2::uuid[], $3::bigint[]) AS l(id, user_id, amount)
               ON CONFLICT (id) DO UPDATE SET amount = credit_leases.amount + EXCLUDED.amount,
                                              expires_at = EXCLUDED.expires_at"#,
            &lease_ids,
            &users,
            &amounts,
            instance_id,
            lease_ttl_secs
        )
        .execute(&mut *transaction)
        .await?;
    }
    let all_users: Vec<Uuid> = batch.iter().map(|wanted| wanted.user_id).collect();
    let others: std::collections::HashMap<Uuid, i64> = sqlx::query!(
        r#"SELECT user_id, COALESCE(sum(amount - settled), 0)::bigint AS "held!" FROM credit_leases
           WHERE user_id = ANY($1) AND instance_id <> $2 GROUP BY user_id"#,
        &all_users,
        instance_id
    )
    .fetch_all(&mut *transaction)
    .await?
    .into_iter()
    .map(|row| (row.user_id, row.held))
    .collect();
    transaction.commit().await?;
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
