//! The service's idea of "now". Every expiry (codes, tokens, sessions, captchas) is decided
//! against this clock rather than the database's `now()`, so tests can move time forward
//! instead of sleeping. In production the offset stays zero.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Duration, Utc};

#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: AtomicI64,
}

impl Clock {
    pub fn now(&self) -> DateTime<Utc> {
        // Adding even a zero offset recomputes the date: skipped on every call in production.
        match self.offset_ms.load(Ordering::Relaxed) {
            0 => Utc::now(),
            offset => Utc::now() + Duration::milliseconds(offset),
        }
    }

    /// Moves this clock forward (tests only have a use for it; nothing in the service calls it).
    pub fn advance(&self, by: Duration) {
        self.offset_ms
            .fetch_add(by.num_milliseconds(), Ordering::Relaxed);
    }
}
