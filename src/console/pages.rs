//! The console's pages: each a shell in the reader's language, with the headers that keep a
//! browser strict about what it may load and run.

use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpRequest, HttpResponse, web};
use minijinja::Value;
use minijinja::context;

use super::strings::{strings, strings_json};
use crate::api::Lang;

/// Who may use a page. The shell itself holds no data: the script sends anyone without a
/// session to the login page, and the API refuses what the session may not see.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Public,
    User,
    Admin,
}

impl Access {
    fn as_str(self) -> &'static str {
        match self {
            Access::Public => "public",
            Access::User => "user",
            Access::Admin => "admin",
        }
    }
}

struct Page {
    path: &'static str,
    /// The template under `templates/console/pages/`, and the page's name for the script.
    name: &'static str,
    access: Access,
}

const PAGES: &[Page] = &[
    page("/login", "login", Access::Public),
    page("/signup", "signup", Access::Public),
    page("/forgot-password", "forgot_password", Access::Public),
    page("/reset-password", "reset_password", Access::Public),
    page("/dashboard", "dashboard", Access::User),
    page("/keys", "keys", Access::User),
    page("/plans", "plans", Access::User),
    page("/billing", "billing", Access::User),
    page("/billing/success", "checkout_return", Access::User),
    page("/billing/cancel", "checkout_return", Access::User),
    page("/ledger", "ledger", Access::User),
    page("/usage", "usage", Access::User),
    page("/settings", "settings", Access::User),
    page("/admin/users", "admin_users", Access::Admin),
    page("/admin/plans", "admin_plans", Access::Admin),
    page("/admin/providers", "admin_providers", Access::Admin),
    page("/admin/orders", "admin_orders", Access::Admin),
    page("/admin/redemption", "admin_redemption", Access::Admin),
];

const fn page(path: &'static str, name: &'static str, access: Access) -> Page {
    Page { path, name, access }
}

/// Scripts, styles, images and requests from this origin only; no inline script or style, no
/// `eval`, no framing, no `<base>` and no form posted elsewhere. `data:` images are the
/// captcha and the two-factor QR code, which the API sends as data URLs.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
    frame-ancestors 'none'; base-uri 'none'";

const LANG_COOKIE: &str = "lang";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(home));
    for (index, page) in PAGES.iter().enumerate() {
        cfg.route(
            page.path,
            web::get().to(move |request: HttpRequest| render(index, request)),
        );
    }
}

/// The dashboard, or the login page on the way there for someone signed out (the script
/// decides; the server does not know the tab's session).
async fn home() -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, "/dashboard"))
        .finish()
}

async fn render(index: usize, request: HttpRequest) -> HttpResponse {
    let page = &PAGES[index];
    let (lang, chosen) = language(&request);
    let environment = crate::templates::environment();
    let template = format!("console/pages/{}.html", page.name);
    let html = environment.get_template(&template).and_then(|template| {
        template.render(context! {
            lang => lang_code(lang),
            other_lang => lang_code(match lang { Lang::En => Lang::Zh, Lang::Zh => Lang::En }),
            t => strings(lang),
            strings_json => Value::from_safe_string(strings_json(lang).to_owned()),
            page => page.name,
            path => page.path,
            access => page.access.as_str(),
            admin => page.access == Access::Admin,
        })
    });
    let html = match html {
        Ok(html) => html,
        Err(error) => {
            tracing::error!(%error, template, "a console page failed to render");
            return HttpResponse::InternalServerError().finish();
        }
    };
    let mut response = HttpResponse::Ok();
    response
        .insert_header(ContentType::html())
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        // The reset page's address holds its token: no other site learns it from a link.
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header(("cross-origin-opener-policy", "same-origin"))
        .insert_header((header::CACHE_CONTROL, "no-cache"));
    if chosen {
        response.cookie(
            Cookie::build(LANG_COOKIE, lang_code(lang))
                .path("/")
                .same_site(SameSite::Lax)
                .http_only(true)
                .max_age(CookieDuration::days(365))
                .finish(),
        );
    }
    response.body(html)
}

fn lang_code(lang: Lang) -> &'static str {
    match lang {
        Lang::En => "en",
        Lang::Zh => "zh",
    }
}

/// The reader's language: `?lang=` (then remembered in a cookie, the second return value),
/// the cookie, `X-Lang`, then the browser's `Accept-Language` in its order of preference.
fn language(request: &HttpRequest) -> (Lang, bool) {
    let from_query = form_urlencoded::parse(request.query_string().as_bytes())
        .find(|(key, _)| key == "lang")
        .and_then(|(_, value)| Lang::parse(&value));
    if let Some(lang) = from_query {
        return (lang, true);
    }
    let from_cookie = request
        .cookie(LANG_COOKIE)
        .and_then(|cookie| Lang::parse(cookie.value()));
    let from_header = || {
        request
            .headers()
            .get("x-lang")
            .and_then(|value| value.to_str().ok())
            .and_then(Lang::parse)
    };
    let from_browser = || {
        let accepted = request
            .headers()
            .get(header::ACCEPT_LANGUAGE)?
            .to_str()
            .ok()?;
        preferred_language(accepted)
    };
    let lang = from_cookie
        .or_else(from_header)
        .or_else(from_browser)
        .unwrap_or_default();
    (lang, false)
}

/// The first language of an `Accept-Language` list (by quality, then order) that the console
/// speaks; `q=0` means "not this one".
fn preferred_language(accepted: &str) -> Option<Lang> {
    let mut choices: Vec<(f32, usize, Lang)> = accepted
        .split(',')
        .enumerate()
        .filter_map(|(position, item)| {
            let mut parts = item.split(';');
            let lang = Lang::parse(parts.next()?)?;
            let quality = parts
                .find_map(|part| part.trim().strip_prefix("q="))
                .map_or(Some(1.0), |q| q.trim().parse::<f32>().ok())?;
            (quality > 0.0).then_some((quality, position, lang))
        })
        .collect();
    choices.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    choices.first().map(|choice| choice.2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_browsers_language_is_read_by_quality_then_order() {
        assert_eq!(
            preferred_language("zh-CN,zh;q=0.9,en;q=0.8"),
            Some(Lang::Zh)
        );
        assert_eq!(
            preferred_language("fr, en-GB;q=0.5, zh;q=0.7"),
            Some(Lang::Zh)
        );
        assert_eq!(preferred_language("de, en;q=0.1"), Some(Lang::En));
        assert_eq!(preferred_language("zh;q=0, en;q=0.2"), Some(Lang::En));
        assert_eq!(preferred_language("fr, de"), None);
        assert_eq!(preferred_language("en;q=abc"), None);
    }
}
