//! The metered gateway: API keys, providers, limits, exact credits, the upstream proxy, usage
//! and the account status that sums them up.
//! Codes 40102, 40103, 40201, 40301, 42901-42903, 50201, 50301; extensions 40303-40305.

mod batch;
mod body;
mod breaker;
mod call;
mod cold;
mod connections;
mod directory;
mod error;
mod in_flight;
mod key_blocks;
mod key_controls;
pub mod keys;
mod limits;
mod meter;
mod near_keys;
mod providers;
mod proxy;
mod reservations;
mod settlement;
mod signals;
mod spend_cap;
mod status;
mod unconfirmed;
mod upstream;
mod usage;
mod wallet;
pub(crate) mod wire;

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use sqlx::PgPool;
use utoipa::OpenApi;

use crate::clock::Clock;
use crate::config::Settings;
use crate::db::WritesSeen;
use crate::limits::Rate;
pub use body::ForwardedBody;
pub use call::{Call, CallBody};
pub use cold::month_calls;
pub use directory::Directory;
pub use error::GatewayError;
pub use meter::Meter;
use providers::ProviderTable;
pub use proxy::meter as meter_call;

/// Everything the gateway keeps in memory.
pub struct GatewayState {
    pub directory: Directory,
    pub meter: Meter,
    pub providers: ProviderTable,
    /// What this process's writers wait on so that its next call sees their change.
    pub writes_seen: Arc<WritesSeen>,
    in_flight: in_flight::InFlight,
    global_rate: Option<Rate>,
    breakers: breaker::Breakers,
}

impl GatewayState {
    pub async fn new(settings: &Settings, pool: PgPool, clock: Arc<Clock>) -> anyhow::Result<Self> {
        let providers = ProviderTable::default();
        providers.reload(&pool).await?;
        let terms = reservations::LeaseTerms::new(settings.gateway.lease_ttl);
        Ok(GatewayState {
            directory: Directory::new(pool.clone(), clock.clone(), settings.billing_grace, terms),
            meter: Meter::new(pool, clock, terms),
            providers,
            writes_seen: Arc::new(WritesSeen::new(signals::CHANNEL)),
            in_flight: in_flight::InFlight::new(settings.gateway.max_in_flight),
            breakers: breaker::Breakers::new(
                settings.gateway.breaker_failures,
                settings.gateway.breaker_cool_down,
            ),
            global_rate: settings.gateway.global_rps.map(|rps| Rate {
                limit: rps,
                period: Duration::from_secs(1),
            }),
        })
    }

    /// The background work: the notifications of `signals.rs`; and, periodically, settlement,
    /// providers and `last_used_at` every tick; status, plan limits and expired leases every
    /// five seconds (the floor under the notifications, which bring a change in milliseconds;
    /// at 10,000 cached keys a status reload every half second was 7 % of the gateway's CPU).
    pub async fn run_background(self: Arc<Self>, pool: PgPool, tick: Duration) {
        tokio::join!(
            self.clone().listen(pool.clone()),
            self.run_periodic(pool, tick)
        );
    }

    async fn run_periodic(self: Arc<Self>, pool: PgPool, tick: Duration) {
        let mut settle = tokio::time::interval(tick);
        let mut slow = tokio::time::interval(Duration::from_secs(5));
        for interval in [&mut settle, &mut slow] {
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            let outcome = tokio::select! {
                _ = settle.tick() => {
                    let providers = self.providers.reload(&pool).await.map_err(anyhow::Error::from);
                    let meter = self.meter.tick(&self.directory).await.map_err(anyhow::Error::from);
                    providers.and(meter)
                }
                _ = slow.tick() => {
                    let status = self.directory.refresh_status().await.map_err(anyhow::Error::from);
                    let limits = self.directory.refresh_limits().await.map_err(anyhow::Error::from);
                    let sweep = self.meter.sweep_expired().await.map(drop).map_err(anyhow::Error::from);
                    status.and(limits).and(sweep)
                }
            };
            if let Err(error) = outcome {
                tracing::warn!(error = %error, "gateway background work failed; retrying");
            }
        }
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/myapi/status", web::get().to(status::status))
        .route("/myapi/keys", web::post().to(keys::create))
        .route("/myapi/keys", web::get().to(keys::list))
        .route("/myapi/keys/{id}", web::delete().to(keys::revoke))
        .route("/myapi/keys/{id}", web::patch().to(key_controls::change))
        .route(
            "/myapi/keys/{id}/rotate",
            web::post().to(key_controls::rotate),
        )
        .route("/myapi/usage", web::get().to(usage::usage))
        .route("/myapi/admin/providers", web::get().to(providers::list))
        .route("/myapi/admin/providers", web::post().to(providers::create))
        .route(
            "/myapi/admin/providers/{slug}",
            web::put().to(providers::update),
        )
        .route(
            "/myapi/admin/providers/{slug}",
            web::delete().to(providers::delete),
        );
}

/// `ANY /api/v1/{provider}/{path...}`, in a scope of its own.
pub fn configure_proxy(cfg: &mut web::ServiceConfig) {
    // Every path below `/api/v1` is the gateway's, and the handler splits it itself
    // (`proxy::split_path`): a prefix match instead of two patterns' regular expressions on
    // every call.
    cfg.service(web::scope("/api/v1").default_service(web::to(proxy::forward)));
}

#[derive(OpenApi)]
#[openapi(
    paths(status::status, proxy::forward, keys::create, keys::list, keys::revoke, key_controls::change,
        key_controls::rotate, usage::usage, providers::list,
        providers::create, providers::update, providers::delete),
    tags((name = "keys", description = "API keys and usage"),
        (name = "gateway", description = "The metered calls to providers"))
)]
pub struct GatewayApi;
