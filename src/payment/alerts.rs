//! Low-balance alerts: an account whose credits fall below the threshold its user set is emailed
//! once; the alert re-arms when the balance is back at or above the threshold. Every instance
//! runs the check; the rows it takes are locked, so two instances never send the same alert.

use std::sync::Arc;
use std::time::Duration;

use crate::api::Lang;
use crate::auth::users;
use crate::mail::{Email, outbox};
use crate::state::AppState;

/// How often balances are compared with the thresholds.
const EVERY: Duration = Duration::from_secs(2);

pub async fn run(context: Arc<AppState>) {
    let mut every = tokio::time::interval(EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Err(error) = check(&context).await {
            tracing::warn!(%error, "the low-balance alerts could not be checked; retrying");
        }
    }
}

async fn check(context: &AppState) -> Result<(), sqlx::Error> {
    let mut transaction = context.pool.begin().await?;
    let crossings = users::take_low_balance_crossings(&mut transaction).await?;
    for crossing in &crossings {
        let email = Email::LowBalance {
            credits: crossing.balance,
            threshold: crossing.threshold,
        };
        let lang = Lang::parse(&crossing.lang).unwrap_or_default();
        outbox::enqueue(&mut transaction, &crossing.email, lang, &email).await?;
    }
    users::rearm_low_balance_alerts(&mut transaction).await?;
    transaction.commit().await
}
