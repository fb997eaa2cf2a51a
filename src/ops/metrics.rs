//! `/metrics`: requests by route and status and their latency (actix-web-prom), plus gauges of
//! the connection pool read at scrape time.

use actix_web_prom::{PrometheusMetrics, PrometheusMetricsBuilder};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGauge, Opts, Registry};
use sqlx::PgPool;

const NAMESPACE: &str = "meterapi";

/// The metrics middleware; it also serves `GET /metrics`.
pub fn middleware(pool: &PgPool) -> anyhow::Result<PrometheusMetrics> {
    let registry = Registry::new();
    registry.register(Box::new(PoolCollector::new(pool.clone())?))?;
    PrometheusMetricsBuilder::new(NAMESPACE)
        .registry(registry)
        .endpoint("/metrics")
        // Unmatched paths are one label value, so a scanner cannot grow the series without bound.
        .mask_unmatched_patterns("UNMATCHED")
        // The docs' static files are not traffic worth a series (and their wildcard route
        // cannot be turned into a label).
        .exclude_regex("^/docs/")
        .buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ])
        .build()
        .map_err(|error| anyhow::anyhow!("cannot build the metrics middleware: {error}"))
}

/// Pool size, idle connections and the configured maximum, read when Prometheus scrapes.
struct PoolCollector {
    pool: PgPool,
    size: IntGauge,
    idle: IntGauge,
    max: IntGauge,
}

impl PoolCollector {
    fn new(pool: PgPool) -> prometheus::Result<PoolCollector> {
        let gauge = |name: &str, help: &str| {
            IntGauge::with_opts(
                Opts::new(name, help)
                    .namespace(NAMESPACE)
                    .subsystem("db_pool"),
            )
        };
        Ok(PoolCollector {
            pool,
            size: gauge("connections", "Open connections of the database pool")?,
            idle: gauge("idle_connections", "Idle connections of the database pool")?,
            max: gauge("max_connections", "The most connections the pool will open")?,
        })
    }
}

impl Collector for PoolCollector {
    fn desc(&self) -> Vec<&Desc> {
        [&self.size, &self.idle, &self.max]
            .into_iter()
            .flat_map(|g| g.desc())
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.size.set(i64::from(self.pool.size()));
        self.idle
            .set(i64::try_from(self.pool.num_idle()).unwrap_or(i64::MAX));
        self.max
            .set(i64::from(self.pool.options().get_max_connections()));
        [&self.size, &self.idle, &self.max]
            .into_iter()
            .flat_map(|g| g.collect())
            .collect()
    }
}
