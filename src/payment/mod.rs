//! Payment: orders paid through Stripe Checkout, subscriptions, the webhooks that settle them,
//! cancellation, and manual orders. Codes 40007, 40021-40028, 40302, 40411, 50021-50023.

pub mod alerts;
mod billing_routes;
mod customer;
mod erasure;
mod error;
mod event;
mod events;
mod fields;
mod grant;
mod invoice;
mod invoice_events;
mod matching;
mod notices;
mod order;
mod redemption;
mod redemption_routes;
mod reversal;
mod routes;
pub mod signature;
mod stripe_api;
mod subscription;
mod webhook;

use actix_web::web;
use utoipa::OpenApi;

pub use erasure::{cancel_live_subscription, forget_customer};
pub use error::PaymentError;
pub use order::SubscriptionView;
pub use stripe_api::StripeApi;
pub use subscription::{account_plan, account_plans};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/myapi/orders", web::post().to(routes::create_order))
        .route("/myapi/orders", web::get().to(routes::list_orders))
        .route("/myapi/orders/{order_no}", web::get().to(routes::get_order))
        .route(
            "/myapi/orders/{order_no}/checkout",
            web::post().to(routes::checkout),
        )
        .route(
            "/myapi/orders/{order_no}/cancel",
            web::post().to(routes::cancel),
        )
        .route(
            "/myapi/webhooks/stripe",
            web::post().to(webhook::stripe_webhook),
        )
        .route(
            "/myapi/admin/orders",
            web::post().to(routes::admin_create_manual_order),
        )
        .route(
            "/myapi/admin/orders",
            web::get().to(routes::admin_list_orders),
        )
        .route(
            "/myapi/invoices",
            web::get().to(billing_routes::list_invoices),
        )
        .route(
            "/myapi/admin/invoices",
            web::get().to(billing_routes::admin_list_invoices),
        )
        .route(
            "/myapi/billing/portal",
            web::post().to(billing_routes::billing_portal),
        )
        .route(
            "/myapi/subscription/change",
            web::post().to(billing_routes::change_plan),
        )
        .route("/myapi/redeem", web::post().to(redemption_routes::redeem))
        .route(
            "/myapi/admin/redemption-batches",
            web::post().to(redemption_routes::create_batch),
        )
        .route(
            "/myapi/admin/redemption-batches",
            web::get().to(redemption_routes::list_batches),
        )
        .route(
            "/myapi/admin/redemption-batches/{id}/disable",
            web::post().to(redemption_routes::disable_batch),
        );
}

#[derive(OpenApi)]
#[openapi(
    paths(routes::create_order, routes::list_orders, routes::get_order, routes::checkout,
        routes::cancel, routes::admin_create_manual_order, routes::admin_list_orders, webhook::stripe_webhook,
        billing_routes::list_invoices, billing_routes::admin_list_invoices,
        billing_routes::billing_portal, billing_routes::change_plan, redemption_routes::redeem,
        redemption_routes::create_batch, redemption_routes::list_batches,
        redemption_routes::disable_batch),
    tags((name = "payment", description = "Orders, checkout, subscriptions and Stripe webhooks"))
)]
pub struct PaymentApi;
