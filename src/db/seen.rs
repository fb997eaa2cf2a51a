//! Read-your-writes for the caches that live on notifications (the gateway's, `signals.rs`): a
//! handler that committed a change such a cache holds (credits, a plan, a freeze, a key) waits,
//! before it answers, until this process's listener has acted on everything committed so far.
//! The very next call on this instance then sees the change; other instances hear it by the
//! same notifications within milliseconds.
//!
//! How: the handler sends a marker of its own on the listener's channel after its commit.
//! PostgreSQL delivers notifications in commit order, so when the listener reaches the marker it
//! has acted on the handler's changes. One mechanism covers every writer, including the ones
//! deep inside a Stripe event's handling.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

/// How long a handler waits for the listener. It is reached in about a millisecond; when its
/// connection is down it refreshes everything on reconnecting, so a writer need not wait
/// longer than the reconnect.
const WAIT: Duration = Duration::from_secs(1);

const MARKER: &str = "seen:";

pub struct WritesSeen {
    channel: &'static str,
    /// Markers of other processes on the same channel are not this one's.
    instance: Uuid,
    /// The last marker handed out.
    sent: AtomicU64,
    /// The last marker the listener reached.
    reached: watch::Sender<u64>,
}

impl WritesSeen {
    /// For the listener on `channel`.
    pub fn new(channel: &'static str) -> Self {
        Self {
            channel,
            instance: Uuid::new_v4(),
            sent: AtomicU64::new(0),
            reached: watch::Sender::new(0),
        }
    }

    /// Waits until the listener has acted on every notification committed before this call (at
    /// most `WAIT`: a failure here only delays what the listener's reconnect brings anyway).
    pub async fn wait(&self, pool: &PgPool) {
        let marker = self.sent.fetch_add(1, Ordering::Relaxed) + 1;
        let mut reached = self.reached.subscribe();
        let sent = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(self.channel)
            .bind(format!("{MARKER}{}:{marker}", self.instance))
            .execute(pool)
            .await;
        if let Err(error) = sent {
            tracing::warn!(error = %error, "cannot send a marker to this process's listener");
            return;
        }
        let waited = tokio::time::timeout(WAIT, reached.wait_for(|seen| *seen >= marker)).await;
        if waited.is_err() {
            tracing::warn!("this process's listener did not reach a marker in time");
        }
    }

    /// For the listener: whether `payload` is a marker (of this process or another one), and
    /// when it is this process's, that everything before it was acted on.
    pub fn is_marker(&self, payload: &str) -> bool {
        let Some(rest) = payload.strip_prefix(MARKER) else {
            return false;
        };
        if let Some((instance, marker)) = rest.split_once(':')
            && Uuid::parse_str(instance).ok() == Some(self.instance)
            && let Ok(marker) = marker.parse::<u64>()
        {
            self.caught_up(marker);
        }
        true
    }

    /// For the listener, before it reads everything again after (re)connecting: the markers
    /// sent so far. Once that reading is done, `caught_up` them.
    pub fn sent_so_far(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// The listener has acted on everything committed before marker `marker` was sent: reached
    /// by the marker itself, or by a full reading that began after it was sent (its
    /// notification may have been lost with the connection).
    pub fn caught_up(&self, marker: u64) {
        self.reached.send_if_modified(|seen| {
            let later = marker > *seen;
            *seen = (*seen).max(marker);
            later
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_process_markers_move_it() {
        let seen = WritesSeen::new("channel");
        assert!(!seen.is_marker("credits:1"));
        assert!(seen.is_marker(&format!("seen:{}:3", Uuid::new_v4())));
        assert_eq!(*seen.reached.borrow(), 0);
        assert!(seen.is_marker(&format!("seen:{}:3", seen.instance)));
        assert_eq!(*seen.reached.borrow(), 3);
        // Never backwards.
        seen.caught_up(2);
        assert!(seen.is_marker(&format!("seen:{}:1", seen.instance)));
        assert_eq!(*seen.reached.borrow(), 3);
    }
}
