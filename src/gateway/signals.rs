//! The gateway's ear on `meterapi_gateway` (migration 9): PostgreSQL says at commit what
//! changed (credits, an account's status or plan, a plan's limits, a revoked key, a request to
//! give credits back), so every instance acts on it within milliseconds instead of at its next
//! refresh. Notifications lost while the connection was down are made up for by a full refresh
//! when it is back; the periodic refresh stays as the floor.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use uuid::Uuid;

use super::GatewayState;
use super::directory::Account;

pub const CHANNEL: &str = "meterapi_gateway";

#[derive(Debug, PartialEq, Eq)]
enum Signal {
    /// More credits became available to the account.
    Credits(Uuid),
    /// Another instance needs the account's credits that this one holds unspent.
    Reclaim(Uuid),
    /// The account's status or plan changed.
    Account(Uuid),
    /// A plan's limits changed.
    Plan,
    /// A key was revoked.
    Key(Uuid),
}

impl Signal {
    fn parse(payload: &str) -> Option<Signal> {
        let (kind, id) = payload.split_once(':')?;
        let uuid = || Uuid::parse_str(id).ok();
        match kind {
            "credits" => uuid().map(Signal::Credits),
            "reclaim" => uuid().map(Signal::Reclaim),
            "account" => uuid().map(Signal::Account),
            "plans" => Some(Signal::Plan),
            "key" => uuid().map(Signal::Key),
            _ => None,
        }
    }
}

/// Asks every instance to give back what it holds of `user_id`'s credits and does not use.
pub async fn request_reclaim(pool: &PgPool, user_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(format!("reclaim:{user_id}"))
        .execute(pool)
        .await
        .map(drop)
}

/// How long a call waits for other instances to give back what it needs of an account.
const RECLAIM_WAIT: Duration = Duration::from_millis(500);

/// Asks every instance to give back what it holds of `account`'s credits (and key blocks) and
/// does not use, and waits until some arrive or `RECLAIM_WAIT` passed; the caller reserves again.
pub async fn reclaim_and_wait(pool: &PgPool, account: &Account) -> Result<(), sqlx::Error> {
    let arrived = account.credits_arrived.notified();
    tokio::pin!(arrived);
    // Listening before asking, so an answer that comes at once is not missed.
    arrived.as_mut().enable();
    request_reclaim(pool, account.user_id).await?;
    let _ = tokio::time::timeout(RECLAIM_WAIT, arrived).await;
    Ok(())
}

impl GatewayState {
    /// Listens until the process ends, reconnecting after a lost connection.
    pub async fn listen(self: Arc<Self>, pool: PgPool) {
        loop {
            match self.listen_once(&pool).await {
                Ok(()) => tracing::warn!("the gateway's notification connection was lost"),
                Err(error) => {
                    tracing::warn!(error = %error, "the gateway cannot listen for notifications")
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn listen_once(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        // Whatever changed while nobody listened is read again; a writer's marker sent before
        // this reading began is then reached, even if its notification was lost.
        let markers_sent = self.writes_seen.sent_so_far();
        if self.refresh_everything().await {
            self.writes_seen.caught_up(markers_sent);
        }
        // `try_recv` answers None when the connection dropped (the next call reconnects, and
        // what was said meanwhile is lost): then refresh and go on.
        loop {
            match listener.try_recv().await? {
                Some(notification) if self.writes_seen.is_marker(notification.payload()) => {}
                Some(notification) => match Signal::parse(notification.payload()) {
                    Some(signal) => self.apply(signal).await,
                    None => tracing::warn!(payload = notification.payload(), "unknown signal"),
                },
                None => return Ok(()),
            }
        }
    }

    /// An account's credits grew: its next call reserves again.
    fn credits_grew(&self, user_id: Uuid) {
        if let Some(account) = self.directory.cached_account(user_id) {
            self.meter.credits_arrived(&account);
        }
    }

    /// Reads statuses and limits again, and has every cached account reserve again; whether the
    /// reading succeeded.
    async fn refresh_everything(&self) -> bool {
        let status = self.directory.refresh_status().await;
        let limits = self.directory.refresh_limits().await;
        for account in self.directory.cached_accounts() {
            self.meter.credits_arrived(&account);
        }
        match status.and(limits) {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(error = %error, "refreshing the gateway's cache failed");
                false
            }
        }
    }

    async fn apply(&self, signal: Signal) {
        let outcome = match signal {
            Signal::Credits(user_id) => {
                self.credits_grew(user_id);
                Ok(())
            }
            Signal::Reclaim(user_id) => match self.directory.cached_account(user_id) {
                Some(account) => self
                    .meter
                    .give_back_unused(&account)
                    .await
                    .map_err(anyhow::Error::from),
                None => Ok(()),
            },
            Signal::Account(user_id) => self
                .directory
                .refresh_account(user_id)
                .await
                .map_err(anyhow::Error::from),
            Signal::Plan => self
                .directory
                .refresh_limits()
                .await
                .map_err(anyhow::Error::from),
            // Revoked, rotated or its controls changed: the next call loads it again.
            Signal::Key(key_id) => {
                self.directory.forget_key(key_id);
                Ok(())
            }
        };
        if let Err(error) = outcome {
            tracing::warn!(error = %error, "acting on a gateway signal failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_a_kind_and_an_id() {
        let id = Uuid::new_v4();
        assert_eq!(
            Signal::parse(&format!("credits:{id}")),
            Some(Signal::Credits(id))
        );
        assert_eq!(Signal::parse("plans:12"), Some(Signal::Plan));
        assert_eq!(Signal::parse(&format!("key:{id}")), Some(Signal::Key(id)));
        assert_eq!(Signal::parse("credits:nope"), None);
        assert_eq!(Signal::parse("other"), None);
    }
}
