//! The admin surface: `AdminUser`, the guard of every `/myapi/admin` route (403 with the global
//! code for anyone else), and the scope that gathers the modules' admin handlers.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};

use crate::api::{ApiError, Code};
use crate::auth::session::ActiveUser;
use crate::auth::users::Profile;

/// A logged-in, active user with the `admin` role.
pub struct AdminUser(pub Profile);

impl FromRequest for AdminUser {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let user = ActiveUser::from_request(req, payload);
        Box::pin(async move {
            let ActiveUser(session) = user.await?;
            if session.user.role != "admin" {
                return Err(ApiError::new(Code::FORBIDDEN).with_detail("Admins only."));
            }
            Ok(AdminUser(session.user))
        })
    }
}

mod users;

pub use users::AdminApi;

pub fn configure(cfg: &mut web::ServiceConfig) {
    let scope = web::scope("/myapi/admin")
        .route("/users", web::get().to(users::list))
        .route("/users/{id}/freeze", web::post().to(users::freeze))
        .route("/users/{id}/unfreeze", web::post().to(users::unfreeze));
    cfg.service(
        crate::gateway::configure_admin(scope)
            .route("/plans", web::get().to(crate::plans::admin_list))
            .route("/plans", web::post().to(crate::plans::admin_create))
            .route("/plans/{id}", web::put().to(crate::plans::admin_update))
            .route("/plans/{id}", web::delete().to(crate::plans::admin_delete))
            .route(
                "/users/{id}/credits",
                web::post().to(crate::ledger::adjust_credits),
            )
            .route(
                "/orders",
                web::post().to(crate::payment::admin_create_manual_order),
            ),
    );
}
