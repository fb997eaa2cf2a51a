//! The shared core every feature may use: the pool, the settings, the clock, the mailer, the
//! limiter, and the wait for this process's notification listener. It imports no feature
//! module; a feature that needs more (password hashing, Stripe, the gateway's memory) registers
//! its own `web::Data` in `startup.rs` and takes just that.

use std::sync::Arc;

use sqlx::PgPool;

use crate::clock::Clock;
use crate::config::Settings;
use crate::db::WritesSeen;
use crate::limits::Limiter;
use crate::mail::Mailer;

pub struct AppState {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    pub clock: Arc<Clock>,
    pub mailer: Arc<Mailer>,
    pub limiter: Limiter,
    /// A writer of what the gateway caches waits on it after its commit, so that this
    /// instance's next call sees the change.
    pub writes_seen: Arc<WritesSeen>,
}
