//! The admin's view of accounts (search, freeze and unfreeze) and an account's data as a whole
//! (export and deletion, by its user or an admin). A leaf: it reads and erases accounts through
//! the modules below and tells the gateway; nothing imports it. The other
//! modules mount their own `/myapi/admin/...` routes in their `configure`.

mod account_data;
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
        )
        .route(
            "/myapi/admin/users/{id}",
            web::delete().to(account_data::delete_user),
        )
        .route(
            "/myapi/admin/users/{id}/export",
            web::get().to(account_data::export_user),
        )
        .route("/myapi/user", web::delete().to(account_data::delete_own))
        .route(
            "/myapi/user/export",
            web::get().to(account_data::export_own),
        );
}
