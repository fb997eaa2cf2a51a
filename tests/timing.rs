//! The time a login takes must not tell whether the address has an account. Alone in its own
//! binary, so no other test shares the cores while it measures.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{TestConfig, spawn_app_with};

#[tokio::test]
async fn an_unknown_address_and_a_wrong_password_take_the_same_time() {
    // The service's own Argon2 parameters, so the hash dominates as it does in production.
    let app = spawn_app_with(
        TestConfig::default()
            .var("ARGON2_MEMORY_KIB", "19456")
            .var("ARGON2_ITERATIONS", "2")
            .var("AUTH_LOGIN_PER_IP_PER_MINUTE", "100000"),
    )
    .await;
    let hash = support::argon2_hash("the real password", 19456, 2);
    sqlx::query("INSERT INTO users (email, password_hash) VALUES ('known@example.com', $1)")
        .bind(hash)
        .execute(&app.pool)
        .await
        .unwrap();
    // A leak is systematic: the known address's login is slower (or faster) than the unknown
    // one's in nearly every pair. Noise from the rest of the machine is not: it makes either
    // side slower about half the time. So count, over pairs made back to back (in alternating
    // order, so that neither side is always first), how often the known login took longer.
    const PAIRS: usize = 60;
    let mut known_slower = 0;
    let mut gaps = Vec::new();
    for pair in 0..PAIRS {
        let (known, unknown) = if pair % 2 == 0 {
            let known = timed_login(&app, "known@example.com").await;
            (known, timed_login(&app, "unknown@example.com").await)
        } else {
            let unknown = timed_login(&app, "unknown@example.com").await;
            (timed_login(&app, "known@example.com").await, unknown)
        };
        known_slower += usize::from(known > unknown);
        gaps.push(known.as_secs_f64() - unknown.as_secs_f64());
    }
    gaps.sort_by(f64::total_cmp);
    let median_gap_ms = gaps[PAIRS / 2] * 1000.0;
    eprintln!("known slower in {known_slower} of {PAIRS} pairs; median gap {median_gap_ms:.3} ms");
    // Without a leak, 12 or fewer (or 48 or more) of 60 happens about once in a million runs.
    assert!(
        (13..=47).contains(&known_slower),
        "the known address was slower in {known_slower} of {PAIRS} pairs (median gap \
         {median_gap_ms:.3} ms): the answer tells whether an address has an account"
    );
}

/// One wrong login for `email`, answered 40111, and how long it took.
async fn timed_login(app: &support::TestApp, email: &str) -> Duration {
    // The failure record is cleared each time, so no captcha is asked for.
    sqlx::query("DELETE FROM login_failures")
        .execute(&app.pool)
        .await
        .unwrap();
    let started = Instant::now();
    let answer = app
        .post_json(
            "/myapi/auth/login",
            &json!({"email": email, "password": "wrong password"}),
        )
        .await;
    let elapsed = started.elapsed();
    answer.assert_error(401, Some(40111));
    elapsed
}
