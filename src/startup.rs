//! `Application`: builds the whole service on a listener it binds itself (port 0 in tests) and
//! runs it until SIGINT or SIGTERM, draining in-flight requests before it stops. The only file
//! that knows every module: it makes the shared core and each feature's own state, and mounts
//! each module's routes.

use std::sync::Arc;
use std::time::Duration;

use actix_web::middleware::from_fn;
use actix_web::{App, HttpResponse, web};
use anyhow::Context;
use tracing_actix_web::TracingLogger;

use crate::api::{self, ApiError};
use crate::auth::{self, Passwords};
use crate::clock::Clock;
use crate::config::Settings;
use crate::db::Database;
use crate::gateway::GatewayState;
use crate::limits::Limiter;
use crate::mail::{self, Mailer};
use crate::payment::StripeApi;
use crate::serve::{AppFactory, Server, ServerHandle};
use crate::state::AppState;
use crate::telemetry::RequestSpan;
use crate::{admin, console, gateway, ledger, ops, payment, plans};

/// How long a stopping server waits for in-flight requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

pub struct Application {
    port: u16,
    server: Server,
    database: Database,
    clock: Arc<Clock>,
    gateway: Arc<GatewayState>,
    state: web::Data<AppState>,
    background: tokio::task::JoinHandle<()>,
    housekeeping: tokio::task::JoinHandle<()>,
    mail_outbox: tokio::task::JoinHandle<()>,
    billing_alerts: tokio::task::JoinHandle<()>,
}

impl Application {
    /// Connects to the database (starting the private cluster when `DATABASE_URL` is unset),
    /// applies the migrations and binds `LISTEN_ADDR`.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        if settings.app_env == crate::config::AppEnv::Production
            && matches!(settings.database, crate::config::DatabaseSettings::Embedded)
        {
            tracing::warn!(
                data_dir = %settings.data_dir.display(),
                "APP_ENV=production with no DATABASE_URL: serving from the private PostgreSQL \
                 cluster under DATA_DIR, on this machine only, with no backups or replicas"
            );
        }
        let database = Database::connect(&settings).await?;
        let listeners = crate::serve::bind(settings.listen_addr, settings.http_workers)
            .with_context(|| format!("cannot listen on LISTEN_ADDR={}", settings.listen_addr))?;
        let port = listeners[0].local_addr()?.port();
        let pin_workers = settings.pin_workers;
        let clock = Arc::new(Clock::default());
        let gateway =
            Arc::new(GatewayState::new(&settings, database.pool.clone(), clock.clone()).await?);
        let background = tokio::spawn(
            gateway
                .clone()
                .run_background(database.pool.clone(), settings.gateway.settle_interval),
        );
        let passwords = web::Data::new(Passwords::new(&settings.auth).await?);
        let stripe = web::Data::new(StripeApi::from_settings(&settings)?);
        let gateway_data = web::Data::from(gateway.clone());
        let state = web::Data::new(AppState {
            pool: database.pool.clone(),
            mailer: Arc::new(Mailer::from_settings(&settings)?),
            limiter: Limiter::from_settings(&settings).await?,
            clock: clock.clone(),
            settings: Arc::new(settings),
            writes_seen: gateway.writes_seen.clone(),
        });
        let metrics = web::Data::new(ops::metrics::HttpMetrics::new(&database.pool)?);
        let housekeeping = tokio::spawn(auth::housekeeping::run(
            database.pool.clone(),
            clock.clone(),
            state.settings.clone(),
        ));
        let mail_outbox = tokio::spawn(mail::outbox::run(
            database.pool.clone(),
            state.mailer.clone(),
            clock.clone(),
        ));
        let billing_alerts = tokio::spawn(payment::alerts::run(state.clone().into_inner()));

        let cors = api::cors(&state.settings.cors);
        let served_state = state.clone();
        let metered_calls = crate::serve::Gateway {
            state: state.clone(),
            gateway: gateway.clone(),
            metrics: metrics.clone(),
        };
        let app = AppFactory::new(move || {
            App::new()
                .wrap(from_fn(ops::metrics::metrics_middleware))
                .wrap(TracingLogger::<RequestSpan>::new())
                .wrap(from_fn(api::request_context_middleware))
                .wrap(cors.clone()) // outside the envelope: errors carry the CORS headers too
                .app_data(state.clone())
                .app_data(passwords.clone())
                .app_data(stripe.clone())
                .app_data(gateway_data.clone())
                .app_data(metrics.clone())
                .configure(api::extractor_configs)
                // The gateway first: the router tries routes in order, and its calls are the
                // ones that must not wait on forty patterns that cannot match.
                .configure(gateway::configure_proxy)
                .configure(ops::configure)
                .configure(auth::configure)
                .configure(plans::configure)
                .configure(ledger::configure)
                .configure(payment::configure)
                .configure(gateway::configure)
                .configure(admin::configure)
                .configure(console::configure)
                .default_service(web::to(unknown_route))
        });
        let server = Server::start(listeners, app, metered_calls, SHUTDOWN_GRACE, pin_workers)?;

        Ok(Application {
            port,
            server,
            database,
            clock,
            gateway,
            state: served_state,
            background,
            housekeeping,
            mail_outbox,
            billing_alerts,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The service's clock; tests move it forward instead of sleeping.
    pub fn clock(&self) -> Arc<Clock> {
        self.clock.clone()
    }

    /// A handle to stop the server from elsewhere (tests, an embedding program).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until a stop signal, then closes the pool and stops the private cluster if this
    /// process started it.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let served = self.server.run().await;
        // The in-flight calls are drained: settle what they spent and give the reserves back.
        self.background.abort();
        self.housekeeping.abort();
        self.billing_alerts.abort();
        // The outbox keeps what it could not send yet; the next start sends it.
        self.mail_outbox.abort();
        self.gateway.meter.close(&self.gateway.directory).await;
        self.state.limiter.return_leases().await;
        self.database.shut_down().await;
        served
    }
}

async fn unknown_route() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found())
}
