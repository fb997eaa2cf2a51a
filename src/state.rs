//! The shared core every feature may use: the pool, the settings, the clock, the mailer and the
//! limiter. It imports no feature module; a feature that needs more (password hashing, Stripe,
//! the gateway's memory) registers its own `web::Data` in `startup.rs` and takes just that.

use std::sync::Arc;

use sqlx::PgPool;

use crate::clock::Clock;
use crate::config::Settings;
use crate::limits::Limiter;
use crate::mail::Mailer;

pub struct AppState {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    pub clock: Arc<Clock>,
    pub mailer: Arc<Mailer>,
    pub limiter: Limiter,
}
