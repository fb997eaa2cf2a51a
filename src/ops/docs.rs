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
    add_common_responses(&mut document);
    document
}

/// Every operation also answers what the shared machinery can answer: 400 for a malformed body
/// or query, 401 without a valid session or key, 404 for an unknown path parameter, 500, and
/// 503 while the database is unreachable. Each module documents its own codes; this adds the
/// rest where an operation does not say more.
fn add_common_responses(document: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
    };
    for (path, item) in document.paths.paths.iter_mut() {
        let has_path_parameters = path.contains('{');
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
        ];
        for operation in operations.into_iter().flatten() {
            let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
            let takes_input = operation.request_body.is_some()
                || operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
            let responses = &mut operation.responses.responses;
            let mut add = |code: &str, description: &str| {
                responses
                    .entry(code.to_owned())
                    .or_insert_with(|| error(description).into());
            };
            if takes_input {
                add(
                    "400",
                    "A malformed body, a wrong type or a missing field, named in `msg`.",
                );
            }
            if secured {
                add(
                    "401",
                    "40101 no valid session (or 40102/40103 for a missing or bad API key).",
                );
                add(
                    "403",
                    "40301 the account is frozen, or the caller lacks the role.",
                );
            }
            if has_path_parameters {
                add("404", "No such resource.");
            }
            add(
                "500",
                "An internal failure; the log line with the same request id says more.",
            );
            if path != "/healthz" {
                add(
                    "503",
                    "The database is unreachable; retry after `Retry-After` seconds.",
                );
            }
        }
    }
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
