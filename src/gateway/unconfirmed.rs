//! Settlements whose COMMIT went unanswered. When the connection dies after COMMIT was sent,
//! PostgreSQL may or may not have committed; settling the same spending again at the next tick
//! would charge it twice if it had (and count its usage twice). So such a settlement is parked
//! with its transaction's id and what it does in memory once committed, its accounts are left
//! out of settlement meanwhile, and at the next tick PostgreSQL is asked whether it committed
//! (`pg_xact_status`, made for exactly this): if so its effects are applied, if not they are
//! dropped (the usage goes back into the wallets) and the accounts settle as after any failure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use super::directory::{Account, lock};

/// A settlement's effects in memory, applied once its transaction is known to have committed.
type OnCommit = Box<dyn FnOnce() + Send>;

#[derive(Default)]
pub(super) struct UnconfirmedCommits {
    parked: Mutex<Vec<Parked>>,
}

struct Parked {
    /// The transaction's id (`xid8`, as text).
    xid: String,
    accounts: Vec<Arc<Account>>,
    on_commit: OnCommit,
}

/// The id of the transaction on `connection` (assigned now if it has none yet), by which to
/// ask later whether it committed.
pub(super) async fn transaction_id(connection: &mut PgConnection) -> Result<String, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT pg_current_xact_id()::text AS "xid!""#)
        .fetch_one(connection)
        .await
}

impl UnconfirmedCommits {
    /// Commits a settlement of `accounts` whose transaction is `xid`, then applies `on_commit`.
    /// When COMMIT fails, whether it took effect is unknown: the settlement is parked until
    /// `confirm` finds out, and its accounts are not settled again meanwhile.
    pub(super) async fn commit(
        &self,
        transaction: Transaction<'_, Postgres>,
        xid: String,
        accounts: Vec<Arc<Account>>,
        on_commit: impl FnOnce() + Send + 'static,
    ) -> Result<(), sqlx::Error> {
        match transaction.commit().await {
            Ok(()) => {
                on_commit();
                Ok(())
            }
            Err(error) => {
                for account in &accounts {
                    lock(account).commit_unconfirmed = true;
                }
                tracing::warn!(accounts = accounts.len(), error = %error,
                    "a settlement's COMMIT went unanswered; its outcome is asked at the next tick");
                self.parked
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner())
                    .push(Parked {
                        xid,
                        accounts,
                        on_commit: Box::new(on_commit),
                    });
                Err(error)
            }
        }
    }

    /// Asks PostgreSQL what became of the parked settlements, applies those that committed,
    /// drops those that did not, and keeps those it cannot tell yet.
    pub(super) async fn confirm(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let parked = std::mem::take(&mut *self.parked.lock().unwrap_or_else(|p| p.into_inner()));
        if parked.is_empty() {
            return Ok(());
        }
        let xids: Vec<String> = parked.iter().map(|parked| parked.xid.clone()).collect();
        let statuses = sqlx::query!(
            r#"SELECT x.xid AS "xid!", pg_xact_status(x.xid::xid8) AS status
               FROM unnest($1::text[]) AS x(xid)"#,
            &xids
        )
        .fetch_all(pool)
        .await;
        let statuses: HashMap<String, Option<String>> = match statuses {
            Ok(rows) => rows.into_iter().map(|row| (row.xid, row.status)).collect(),
            Err(error) => {
                self.keep(parked);
                return Err(error);
            }
        };
        let mut undecided = Vec::new();
        for parked in parked {
            match statuses.get(&parked.xid).map(Option::as_deref) {
                Some(Some("committed")) => (parked.on_commit)(),
                Some(Some("aborted")) => drop(parked.on_commit),
                // Too old for PostgreSQL to remember: counted as committed, so that nothing
                // is charged twice (the worst case is an under-charge).
                Some(None) => {
                    tracing::warn!(xid = %parked.xid,
                        "a settlement's outcome is no longer known; counted as committed");
                    (parked.on_commit)();
                }
                _ => {
                    undecided.push(parked);
                    continue;
                }
            }
            for account in &parked.accounts {
                lock(account).commit_unconfirmed = false;
            }
        }
        self.keep(undecided);
        Ok(())
    }

    fn keep(&self, parked: Vec<Parked>) {
        self.parked
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .extend(parked);
    }
}
