//! The admin's view of accounts: search, freeze and unfreeze. A leaf: it reads accounts through
//! `auth` and `ledger` and tells the gateway about a freeze; nothing imports it. The other
//! modules mount their own `/myapi/admin/...` routes in their `configure`.

mod users;

use actix_web::web;

pub use users::AdminApi;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/myapi/admin/users", web::get().to(users::list))
        .route(
            "/myapi/admin/users/{id}/freeze",
            web::post().to(users::freeze),
        )
        .route(
            "/myapi/admin/users/{id}/unfreeze",
            web::post().to(users::unfreeze),
        );
}
