//! The hosted console: the whole product in a browser, served by the binary (issue 15).
//!
//! Every page is a shell rendered from `templates/console/` in the reader's language; the
//! script (the ES modules under `assets/console/`, embedded) fills it by calling the same `/myapi`
//! endpoints as any frontend, with the session token in `Authorization`, so nothing is
//! reachable through a page that the API does not allow. The token lives in the tab's
//! `sessionStorage`, never in a cookie: the browser sends no ambient credential, so no other
//! site can make a request in the user's name (CSRF needs one), and the strict
//! Content-Security-Policy (scripts from this origin only, no inline script, no `eval`) with
//! text-only rendering keeps injected markup from running to read it.
//!
//! A leaf: it reads the language catalogue and the templates; nothing imports it.

mod assets;
mod pages;
mod strings;

use actix_web::web;

pub fn configure(cfg: &mut web::ServiceConfig) {
    assets::configure(cfg);
    pages::configure(cfg);
}
