//! `/metrics`: requests by route, method and status and their latency, plus gauges of the
//! connection pool read at scrape time.
//!
//! Written here on the prometheus crate rather than with actix-web-prom, which works out the
//! route pattern again on every request and, for routes with a regex segment (the gateway's
//! `{tail:.*}`), fails to and logs a warning per request: a cost measured at several per cent
//! of a gateway call.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use actix_web::http::StatusCode;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{AUTHORIZATION, CONTENT_TYPE};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, web};
use prometheus::core::{Collector, Desc};
use prometheus::local::{LocalHistogram, LocalIntCounter};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use secrecy::ExposeSecret;
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use crate::api::{ApiError, Code};
use crate::state::AppState;

const NAMESPACE: &str = "meterapi";
const LABELS: [&str; 3] = ["endpoint", "method", "status"];
const BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

pub struct HttpMetrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    fixed_routes: thread_local::ThreadLocal<Mutex<FixedRouteSeries>>,
}

impl HttpMetrics {
    pub fn new(pool: &PgPool) -> anyhow::Result<HttpMetrics> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "Total number of HTTP requests").namespace(NAMESPACE),
            &LABELS,
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "http_requests_duration_seconds",
                "HTTP request duration in seconds",
            )
            .namespace(NAMESPACE)
            .buckets(BUCKETS.to_vec()),
            &LABELS,
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(PoolCollector::new(pool.clone())?))?;
        Ok(HttpMetrics {
            registry,
            requests,
            latency,
            fixed_routes: thread_local::ThreadLocal::new(),
        })
    }

    fn render(&self) -> Vec<u8> {
        // Every worker's counts of the fixed routes join the shared series first, so a scrape
        // sees every request answered before it.
        for worker in self.fixed_routes.iter() {
            let series = worker.lock().unwrap_or_else(PoisonError::into_inner);
            for (requests, latency) in series.values() {
                requests.flush();
                latency.flush();
            }
        }
        let mut text = Vec::new();
        // Encoding into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut text);
        text
    }
}

/// The route label: a pattern, never a raw path, so scanners cannot grow the series.
fn route_label(req: &HttpRequest) -> Cow<'static, str> {
    let path = req.path();
    if path.starts_with("/api/v1/") {
        // The gateway's own route; naming it here spares the hot path a walk of the router.
        Cow::Borrowed(GATEWAY_ROUTE)
    } else if path.starts_with("/docs/") && path != "/docs/errors" {
        Cow::Borrowed("/docs/{file}")
    } else {
        req.match_pattern()
            .map_or(Cow::Borrowed("UNMATCHED"), Cow::Owned)
    }
}

/// The method label: one of the standard methods, or `OTHER`, so that made-up methods cannot
/// grow the series either.
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "OTHER",
    }
}

/// The series of the fixed routes by route, method and status, as one worker counts them: its
/// own copies (prometheus's local metrics), added to the shared series when `/metrics` is
/// scraped. Counted in the shared ones, every metered call wrote half a dozen atomics that
/// every worker's calls write too, and each such line moves between cores on every call.
/// The mutex is the worker's own, taken by another thread only at a scrape.
type FixedRouteSeries = HashMap<
    (&'static str, &'static str, u16),
    (LocalIntCounter, LocalHistogram),
    foldhash::fast::RandomState,
>;

impl HttpMetrics {
    /// Counts and times a request in its series: a fixed route's (the gateway's, the docs')
    /// in this worker's own copies (`FixedRouteSeries`); any other's in the vectors, which
    /// hashes the three labels under a lock that every worker takes.
    fn record(
        &self,
        route: Cow<'static, str>,
        method: &'static str,
        status: StatusCode,
        started: Instant,
    ) {
        let find = || {
            let labels = [route.as_ref(), method, status.as_str()];
            (
                self.requests.with_label_values(&labels),
                self.latency.with_label_values(&labels),
            )
        };
        let Cow::Borrowed(fixed) = route else {
            let (requests, latency) = find();
            requests.inc();
            latency.observe(started.elapsed().as_secs_f64());
            return;
        };
        let mut series = self
            .fixed_routes
            .get_or_default()
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (requests, latency) = series
            .entry((fixed, method, status.as_u16()))
            .or_insert_with(|| {
                let (requests, latency) = find();
                (requests.local(), latency.local())
            });
        requests.inc();
        latency.observe(started.elapsed().as_secs_f64());
    }
}

/// The route of the metered calls.
const GATEWAY_ROUTE: &str = "/api/v1/{provider}/{path}";

impl HttpMetrics {
    /// Counts and times a metered call that the HTTP server answered without actix.
    pub fn record_gateway_call(&self, method: &str, status: u16, started: Instant) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        self.record(
            Cow::Borrowed(GATEWAY_ROUTE),
            method_label(method),
            status,
            started,
        );
    }
}

/// Counts and times every request.
pub async fn metrics_middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    let started = Instant::now();
    let metrics = req.app_data::<web::Data<HttpMetrics>>().cloned();
    let response = next.call(req).await?;
    if let Some(metrics) = metrics {
        let route = route_label(response.request());
        let method = method_label(response.request().method().as_str());
        metrics.record(route, method, response.status(), started);
    }
    Ok(response)
}

/// `GET /metrics` in Prometheus's text format; with `METRICS_TOKEN` set, only for
/// `Authorization: Bearer <token>` (compared in constant time).
pub async fn metrics(
    metrics: web::Data<HttpMetrics>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    if let Some(token) = &state.settings.metrics_token {
        let presented = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or_default();
        let expected = token.expose_secret().as_bytes();
        if !bool::from(presented.as_bytes().ct_eq(expected)) {
            return Err(
                ApiError::new(Code::UNAUTHORIZED).with_detail("`/metrics` needs its token.")
            );
        }
    }
    Ok(HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8"))
        .body(metrics.render()))
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
