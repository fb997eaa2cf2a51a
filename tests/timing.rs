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
    // A leak is systematic: it shows in every round. Noise from the rest of the machine does
    // not, so a round whose medians differ is measured again, up to three rounds.
    let mut gaps = Vec::new();
    for _ in 0..3 {
        let gap = median_gap(&app).await;
        if gap < Duration::from_millis(2) {
            return;
        }
        gaps.push(gap);
    }
    panic!("the medians differed by 2 ms or more in every round: {gaps:?}");
}

/// Interleaved wrong logins for a known and an unknown address: how far apart their medians are.
async fn median_gap(app: &support::TestApp) -> Duration {
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..200 {
        // The failure record is cleared each time, so no captcha is asked for.
        sqlx::query("DELETE FROM login_failures")
            .execute(&app.pool)
            .await
            .unwrap();
        let email = if i % 2 == 0 {
            "known@example.com"
        } else {
            "unknown@example.com"
        };
        let started = Instant::now();
        let answer = app
            .post_json(
                "/myapi/auth/login",
                &json!({"email": email, "password": "wrong password"}),
            )
            .await;
        let elapsed = started.elapsed();
        answer.assert_error(401, Some(40111));
        if i % 2 == 0 {
            known.push(elapsed)
        } else {
            unknown.push(elapsed)
        }
    }
    known.sort();
    unknown.sort();
    let (known, unknown) = (known[known.len() / 2], unknown[unknown.len() / 2]);
    eprintln!("medians: known {known:?}, unknown {unknown:?}");
    known.abs_diff(unknown)
}
