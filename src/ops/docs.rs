//! The OpenAPI document (utoipa), its interactive viewer (Swagger UI, vendored into the binary),
//! and the error-code page rendered from `templates/errors.html`.

use actix_web::http::header::{CONTENT_TYPE, LOCATION};
use actix_web::{HttpResponse, web};
use minijinja::context;
use minijinja::value::Serde;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_swagger_ui::SwaggerUi;

use crate::api::{ApiError, CATALOGUE, ErrorBody, Module};

#[derive(OpenApi)]
#[openapi(
    info(title = "meterapi", description = "Accounts, plans, API keys and the metered gateway. \
        Every JSON answer is an envelope `{code, msg, data}`; errors add `sub_code` and \
        `request_id`. The full code table is at `/myapi/error-codes` and `/docs/errors`."),
    paths(super::healthz, super::readyz, super::error_codes),
    components(schemas(ErrorBody)),
    tags((name = "operations", description = "Health, readiness and the code catalogue"))
)]
struct ApiDoc;

/// The whole document: the operations' paths here, merged with every module's.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut document = ApiDoc::openapi();
    document.merge(crate::auth::AuthApi::openapi());
    document.merge(crate::plans::PlansApi::openapi());
    document.merge(crate::ledger::LedgerApi::openapi());
    document.merge(crate::payment::PaymentApi::openapi());
    document.merge(crate::gateway::GatewayApi::openapi());
    document.merge(crate::admin::AdminApi::openapi());
    let components = document.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "session",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("The `token` returned by register and login."))
                .build(),
        ),
    );
    components.add_security_scheme(
        "api_key",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-API-Key",
            "A key from POST /myapi/keys (or `Authorization: Bearer <key>`).",
        ))),
    );
    document
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    // Registered before Swagger UI, whose `/docs/{file}` would otherwise claim it.
    cfg.route("/docs/errors", web::get().to(error_page))
        .route(
            "/docs",
            web::get().to(|| async {
                HttpResponse::PermanentRedirect()
                    .insert_header((LOCATION, "/docs/"))
                    .finish()
            }),
        )
        .service(SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", openapi()));
}

/// The catalogue as a page laid out like the seed's reference: module ranges, global codes,
/// then one table per module.
async fn error_page() -> Result<HttpResponse, ApiError> {
    let global: Vec<_> = CATALOGUE
        .iter()
        .filter(|info| info.module == Module::Global)
        .collect();
    let modules: Vec<_> = Module::WITH_SUB_CODES
        .iter()
        .map(|module| {
            let codes: Vec<_> = CATALOGUE
                .iter()
                .filter(|info| info.module == *module)
                .collect();
            let ranges: Vec<String> = module
                .ranges()
                .iter()
                .map(|(lo, hi)| {
                    if lo == hi {
                        lo.to_string()
                    } else {
                        format!("{lo}-{hi}")
                    }
                })
                .collect();
            context! { title => module.title(), purpose => module.purpose(),
            ranges => ranges.join(", "), codes => Serde(codes) }
        })
        .collect();
    let html = crate::templates::environment()
        .get_template("errors.html")
        .and_then(|template| {
            template.render(context! { global => Serde(global), modules => modules })
        })
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/html; charset=utf-8"))
        .body(html))
}
