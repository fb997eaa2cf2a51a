//! Load generators for `bench/run.sh` that a generic HTTP load tool cannot play:
//!
//! - `loadgen argon2 <samples>`: the median time of one Argon2id check of a password (what a
//!   login costs) with the service's default parameters, measured in process (milliseconds).
//! - `loadgen hash <password>`: a PHC string of the password with the default parameters.
//! - `loadgen webhooks <base_url> <secret> <events> <concurrency>`: distinct, signed Stripe
//!   events (every fifth one a redelivery of an earlier one, to exercise the dedupe), printing
//!   events per second.
//! - `loadgen logins <url> <password> <seconds> <connections> <label>`: logins from
//!   `connections` loops, loop i as `login{i}@example.com` from the client address
//!   `10.9.0.{i}` (`X-Forwarded-For`, the service trusting loopback as its proxy): many users
//!   signing in at once, not one account whose concurrent attempts the captcha rule counts as
//!   failures. Prints a line of `report.py`'s results.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use meterapi::auth::Passwords;
use secrecy::SecretString;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("argon2") => argon2(args.get(2).and_then(|n| n.parse().ok()).unwrap_or(50)).await,
        Some("hash") if args.len() == 3 => {
            let settings = meterapi::Settings::from_lookup(|_| None)?;
            let passwords = Passwords::new(&settings.auth).await?;
            let hash = passwords
                .for_client("loadgen")
                .hash(&SecretString::from(args[2].clone()))
                .await;
            println!("{}", hash.map_err(|e| anyhow::anyhow!("{e}"))?);
            Ok(())
        }
        Some("accounts") if args.len() == 6 => {
            accounts(&args[2], &args[3], args[4].parse()?, args[5].parse()?).await
        }
        Some("logins") if args.len() == 7 => {
            logins(
                &args[2],
                &args[3],
                args[4].parse()?,
                args[5].parse()?,
                &args[6],
            )
            .await
        }
        Some("webhooks") if args.len() == 6 => {
            webhooks(&args[2], &args[3], args[4].parse()?, args[5].parse()?).await
        }
        _ => anyhow::bail!(
            "usage: loadgen argon2 <samples> | webhooks <base> <secret> <events> <concurrency> \
             | accounts <url> <keys file> <seconds> <connections> \
             | logins <url> <password> <seconds> <connections> <label>"
        ),
    }
}

async fn argon2(samples: usize) -> anyhow::Result<()> {
    let settings = meterapi::Settings::from_lookup(|_| None)?;
    let passwords = Passwords::new(&settings.auth).await?;
    let passwords = passwords.for_client("loadgen");
    let password = SecretString::from(String::from("correct horse battery staple"));
    let stored = passwords
        .hash(&password)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        passwords
            .verify(&password, Some(&stored))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        times.push(started.elapsed());
    }
    times.sort();
    println!("{:.3}", times[times.len() / 2].as_secs_f64() * 1000.0);
    Ok(())
}

async fn webhooks(
    base: &str,
    secret: &str,
    events: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let url = format!("{}/myapi/webhooks/stripe", base.trim_end_matches('/'));
    let run = uuid::Uuid::new_v4().simple().to_string();
    let started = Instant::now();
    let failures = futures_util::stream::iter(0..events)
        .map(|i| {
            // Every fifth delivery repeats the event before it: Stripe's retries.
            let id = if i % 5 == 4 { i - 1 } else { i };
            let body = serde_json::json!({
                "id": format!("evt_{run}_{id}"), "object": "event", "type": "invoice.paid",
                "created": chrono::Utc::now().timestamp(),
                "data": {"object": {"id": format!("in_{run}_{id}"), "object": "invoice",
                    "amount_paid": 100, "currency": "usd", "billing_reason": "subscription_cycle",
                    "parent": {"subscription_details": {"subscription": format!("sub_{run}_{id}")}}}}
            })
            .to_string();
            let header = meterapi::payment::signature::sign(
                body.as_bytes(),
                secret,
                chrono::Utc::now().timestamp(),
            );
            let request = client
                .post(&url)
                .header("Stripe-Signature", header)
                .header("content-type", "application/json")
                .body(body)
                .timeout(Duration::from_secs(30));
            async move { request.send().await.map(|r| r.status().is_success()).unwrap_or(false) }
        })
        .buffer_unordered(concurrency)
        .filter(|ok| std::future::ready(!ok))
        .count()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    println!("{:.1} {failures}", events as f64 / elapsed);
    Ok(())
}

/// Calls `url` from `connections` loops for `seconds`, each call with a key drawn at random
/// from `keys_file` (one per line): many accounts calling a little each. Prints requests per
/// second, the calls answered 200 and the others, and the mean latency in ms of each key's
/// first call (the gateway has not seen the key yet when the pass starts cold) and of the rest.
async fn accounts(
    url: &str,
    keys_file: &str,
    seconds: u64,
    connections: usize,
) -> anyhow::Result<()> {
    let keys: Vec<String> = std::fs::read_to_string(keys_file)?
        .lines()
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect();
    anyhow::ensure!(!keys.is_empty(), "no keys in {keys_file}");
    let called: Arc<Vec<AtomicBool>> =
        Arc::new(keys.iter().map(|_| AtomicBool::new(false)).collect());
    let keys = Arc::new(keys);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let loops = (0..connections).map(|seed| {
        let (client, keys, url, called) =
            (client.clone(), keys.clone(), url.to_owned(), called.clone());
        tokio::spawn(async move {
            // xorshift: a different, cheap sequence per loop.
            let mut state =
                0x9E37_79B9_7F4A_7C15u64 ^ (seed as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            let mut tally = Tally::default();
            while Instant::now() < deadline {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let index = (state % keys.len() as u64) as usize;
                let first = !called[index].swap(true, Ordering::Relaxed);
                let sent = Instant::now();
                let succeeded = match client
                    .get(&url)
                    .header("X-API-Key", &keys[index])
                    .send()
                    .await
                {
                    Ok(response) => {
                        let success = response.status().is_success();
                        response.bytes().await.is_ok() && success
                    }
                    Err(_) => false,
                };
                tally.add(succeeded, first, sent.elapsed());
            }
            tally
        })
    });
    let mut tally = Tally::default();
    for outcome in futures_util::future::join_all(loops).await {
        tally.merge(&outcome?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mean_ms =
        |(calls, total): (u64, Duration)| total.as_secs_f64() * 1000.0 / calls.max(1) as f64;
    println!(
        "{:.1} {} {} {:.2} {:.2}",
        (tally.ok + tally.other) as f64 / elapsed,
        tally.ok,
        tally.other,
        mean_ms(tally.first),
        mean_ms(tally.later)
    );
    Ok(())
}

/// What one loop of `accounts` saw: answers, and (count, total latency) of first and later calls.
#[derive(Default)]
struct Tally {
    ok: u64,
    other: u64,
    first: (u64, Duration),
    later: (u64, Duration),
}

impl Tally {
    fn add(&mut self, succeeded: bool, first: bool, latency: Duration) {
        if succeeded {
            self.ok += 1;
        } else {
            self.other += 1;
        }
        let kind = if first {
            &mut self.first
        } else {
            &mut self.later
        };
        kind.0 += 1;
        kind.1 += latency;
    }

    fn merge(&mut self, other: &Tally) {
        self.ok += other.ok;
        self.other += other.other;
        self.first = (self.first.0 + other.first.0, self.first.1 + other.first.1);
        self.later = (self.later.0 + other.later.0, self.later.1 + other.later.1);
    }
}

/// Logs in from `connections` loops for `seconds`, each loop as its own user from its own
/// address; prints label, requests/s, p50, p99 and p99.9 in ms, 0 (no CPU figure), the 200s
/// and all answers, tab-separated.
async fn logins(
    url: &str,
    password: &str,
    seconds: u64,
    connections: usize,
    label: &str,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let loops = (0..connections).map(|i| {
        let (client, url) = (client.clone(), url.to_owned());
        let body =
            serde_json::json!({"email": format!("login{i}@example.com"), "password": password});
        tokio::spawn(async move {
            let (mut times, mut ok, mut total) = (Vec::new(), 0u64, 0u64);
            while Instant::now() < deadline {
                let sent = Instant::now();
                let answer = client
                    .post(&url)
                    .header("X-Forwarded-For", format!("10.9.0.{i}"))
                    .json(&body)
                    .send()
                    .await;
                if let Ok(response) = answer {
                    if response.status().is_success() {
                        ok += 1;
                    }
                    let _ = response.bytes().await;
                }
                total += 1;
                times.push(sent.elapsed());
            }
            (times, ok, total)
        })
    });
    let (mut times, mut ok, mut total) = (Vec::new(), 0, 0);
    for outcome in futures_util::future::join_all(loops).await {
        let (loop_times, loop_ok, loop_total) = outcome?;
        times.extend(loop_times);
        ok += loop_ok;
        total += loop_total;
    }
    let elapsed = started.elapsed().as_secs_f64();
    times.sort();
    let at = |share: f64| {
        let index = ((times.len() as f64 * share) as usize).min(times.len().saturating_sub(1));
        times.get(index).map_or(0.0, |t| t.as_secs_f64() * 1000.0)
    };
    println!(
        "{label}\t{:.1}\t{:.3}\t{:.3}\t{:.3}\t0\t{ok}\t{total}",
        total as f64 / elapsed,
        at(0.5),
        at(0.99),
        at(0.999)
    );
    Ok(())
}
