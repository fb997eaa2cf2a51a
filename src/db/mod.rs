//! The database: the pool (with a short acquire timeout, so an outage is an answer and not a
//! hang), the migrations, and the private cluster used when `DATABASE_URL` is unset.

pub mod embedded;
mod seen;

use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::{DatabaseSettings, Settings};

/// Whether `error` is a violation of the named constraint or unique index: how a named
/// constraint becomes a domain error at its call site.
pub fn is_violation_of(error: &sqlx::Error, constraint: &str) -> bool {
    error.as_database_error().and_then(|e| e.constraint()) == Some(constraint)
}
pub use embedded::EmbeddedCluster;
pub use seen::WritesSeen;

/// The migrations under `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// How long a request waits for a pooled connection before it answers 503.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// The database name used inside the private cluster.
const EMBEDDED_DATABASE: &str = "meterapi";

/// The pool, and the private cluster when this process started it (stopped on shutdown).
pub struct Database {
    pub pool: PgPool,
    started_cluster: Option<EmbeddedCluster>,
}

impl Database {
    /// Connects as `settings` say, starting the private cluster when needed, and applies the
    /// migrations.
    pub async fn connect(settings: &Settings) -> anyhow::Result<Database> {
        let (options, started_cluster) = match &settings.database {
            DatabaseSettings::Url(url) => {
                let options: PgConnectOptions = url
                    .expose_secret()
                    .parse()
                    .context("DATABASE_URL is not valid")?;
                (options, None)
            }
            DatabaseSettings::Embedded => {
                let cluster = EmbeddedCluster::new(&settings.data_dir.join("postgres"))?;
                let started = cluster.start().await?;
                cluster.ensure_database(EMBEDDED_DATABASE).await?;
                let options = cluster.connect_options(EMBEDDED_DATABASE);
                (options, started.then_some(cluster))
            }
        };
        let pool = pool_options().connect_with(options).await.context(
            "cannot connect to PostgreSQL (check DATABASE_URL, or unset it for the private cluster)",
        )?;
        MIGRATOR
            .run(&pool)
            .await
            .context("applying the migrations failed")?;
        Ok(Database {
            pool,
            started_cluster,
        })
    }

    /// Closes the pool and stops the private cluster if this process started it.
    pub async fn shut_down(self) {
        self.pool.close().await;
        if let Some(cluster) = self.started_cluster
            && let Err(error) = cluster.stop().await
        {
            tracing::warn!(error = %error, "stopping the private PostgreSQL cluster failed");
        }
    }
}

pub fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(20)
        .acquire_timeout(ACQUIRE_TIMEOUT)
}
