//! Auth: captchas, email codes with cooldown, registration, login sessions, password reset and
//! change, and the profile. Codes 40001-40008, 40101, 40111, 40301, 40401, 40402, 50011.

mod captcha;
mod cooldown;
mod email_change;
mod error;
pub mod housekeeping;
mod input;
mod login;
mod password;
pub mod reauth;
mod recovery;
mod register;
mod routes;
pub mod session;
mod sessions_routes;
pub mod token;
pub mod two_factor;
pub mod users;

use actix_web::web;
use utoipa::OpenApi;

pub use error::AuthError;
pub use input::Email;
pub use password::Passwords;
pub use session::{ActiveUser, AdminUser, CurrentSession};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/myapi/auth")
            .route("/captcha", web::get().to(routes::issue_captcha))
            .route("/email-code", web::post().to(routes::send_email_code))
            .route("/register", web::post().to(routes::register))
            .route("/login", web::post().to(routes::login))
            .route("/login/2fa", web::post().to(routes::login_second_step))
            .route("/2fa/setup", web::post().to(two_factor::setup))
            .route("/2fa/enable", web::post().to(two_factor::enable))
            .route("/2fa/disable", web::post().to(two_factor::disable))
            .route("/logout", web::post().to(routes::logout))
            .route("/password/forgot", web::post().to(routes::forgot_password))
            .route("/password/reset", web::post().to(routes::reset_password))
            .route("/password/change", web::post().to(routes::change_password))
            .route("/sessions", web::get().to(sessions_routes::list))
            .route(
                "/sessions/revoke-others",
                web::post().to(sessions_routes::revoke_others),
            )
            .route("/sessions/{id}", web::delete().to(sessions_routes::revoke)),
    )
    .route("/myapi/user/profile", web::get().to(routes::profile))
    .route(
        "/myapi/user/profile",
        web::patch().to(routes::change_profile),
    )
    .route(
        "/myapi/user/email/code",
        web::post().to(email_change::send_code),
    )
    .route("/myapi/user/email", web::post().to(email_change::change));
}

#[derive(OpenApi)]
#[openapi(
    paths(routes::issue_captcha, routes::send_email_code, routes::register, routes::login,
        routes::logout, routes::forgot_password, routes::reset_password, routes::change_password,
        routes::profile, routes::change_profile, sessions_routes::list, sessions_routes::revoke,
        sessions_routes::revoke_others, email_change::send_code, email_change::change,
        routes::login_second_step, two_factor::setup, two_factor::enable, two_factor::disable),
    tags((name = "auth", description = "Accounts, sessions and passwords"))
)]
pub struct AuthApi;
