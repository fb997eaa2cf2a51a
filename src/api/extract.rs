//! Extractors whose errors name the offending field, and the framework configs that route every
//! other extraction failure into the envelope.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::web::{self, Bytes};
use actix_web::{FromRequest, HttpRequest};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// The largest request body any endpoint accepts.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A JSON body. An empty body reads as `{}`, so endpoints whose fields all have defaults accept
/// no body at all. Errors are 400 naming the field (`field `email`: invalid type...`).
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for ApiJson<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = Bytes::from_request(req, payload);
        Box::pin(async move {
            let bytes = body.await.map_err(|error| payload_error(&error))?;
            parse_json(&bytes).map(ApiJson)
        })
    }
}

/// `T` (a body, a query, a path, or a tuple of them) extracted only once the guard `G` (a session,
/// an admin) has passed: a caller who may not use a route learns nothing about what its input
/// should be, and the input is not even read. actix-web polls a handler's extractors together
/// and answers with whichever fails first, so a bare `(AdminUser, ApiJson<T>)` can answer 400
/// before 403.
pub struct Authorized<G, T>(pub G, pub T);

impl<G, T> FromRequest for Authorized<G, T>
where
    G: FromRequest + 'static,
    T: FromRequest + 'static,
    G::Error: Into<actix_web::Error>,
    T::Error: Into<actix_web::Error>,
{
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, actix_web::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let guard = G::from_request(req, payload);
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            let guard = guard.await.map_err(Into::into)?;
            let input = T::from_request(&req, &mut payload)
                .await
                .map_err(Into::into)?;
            Ok(Authorized(guard, input))
        })
    }
}

/// A path and a JSON body, extracted in that order. (A name of its own also keeps utoipa's
/// reading of handler arguments away from the tuple; such routes list their path parameters
/// in `params(..)`.)
pub type PathAndBody<P, B> = (web::Path<P>, ApiJson<B>);

/// Deserialises a JSON document, naming the field that failed.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::bad_request(format!(
                "Malformed JSON at line {} column {}.",
                inner.line(),
                inner.column()
            ));
        }
        let reason = strip_position(&inner);
        if path == "." {
            ApiError::bad_request(format!("{reason}."))
        } else {
            ApiError::bad_request(format!("field `{path}`: {reason}."))
        }
    })
}

/// serde_json appends " at line L column C" to its messages; the field path says more.
fn strip_position(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    text.strip_suffix(&suffix).unwrap_or(&text).to_owned()
}

/// Query parameters, with errors that name the parameter.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned> FromRequest for ApiQuery<T> {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let pairs = form_urlencoded::parse(req.query_string().as_bytes());
        let deserializer = serde_urlencoded::Deserializer::new(pairs);
        let result = serde_path_to_error::deserialize(deserializer)
            .map(ApiQuery)
            .map_err(|e| {
                let path = e.path().to_string();
                let reason = e.into_inner();
                if path == "." {
                    ApiError::bad_request(format!("query: {reason}."))
                } else {
                    ApiError::bad_request(format!("query parameter `{path}`: {reason}."))
                }
            });
        std::future::ready(result)
    }
}

fn payload_error(error: &actix_web::Error) -> ApiError {
    // The overflow reaches us wrapped in actix-http's generic error, so its 413 status is lost;
    // its text ("payload reached size limit") is what still tells it apart.
    let text = error.to_string();
    if text.contains("size limit") || text.contains("Overflow") {
        ApiError::bad_request(format!(
            "The request body exceeds the limit of {MAX_BODY_BYTES} bytes."
        ))
    } else {
        ApiError::bad_request(format!("The request body could not be read: {text}."))
    }
}

/// Limits and error handlers for the framework's own extractors, registered on the app.
pub fn extractor_configs(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
        .app_data(
            web::JsonConfig::default()
                .limit(MAX_BODY_BYTES)
                .error_handler(|error, _| ApiError::bad_request(error.to_string()).into()),
        )
        .app_data(
            web::QueryConfig::default()
                .error_handler(|error, _| ApiError::bad_request(format!("query: {error}.")).into()),
        )
        // A path segment that does not parse (a word where an id goes) names no resource.
        .app_data(web::PathConfig::default().error_handler(|_, _| ApiError::not_found().into()));
}

/// For `#[serde(default, deserialize_with = "present")]` on an `Option<Option<T>>`: a field that
/// is present (null included) is `Some`, an absent one stays `None`, so PATCH bodies can tell
/// "clear" from "leave as it is".
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::ResponseError;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Form {
        email: String,
        nested: Option<Inner>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Inner {
        count: u32,
    }

    fn message(error: ApiError) -> String {
        let response = error.error_response();
        let body = actix_web::body::to_bytes(response.into_body());
        let bytes = futures_util::FutureExt::now_or_never(body)
            .unwrap()
            .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        value["msg"].as_str().unwrap().to_owned()
    }

    #[test]
    fn json_errors_name_the_field() {
        let missing = parse_json::<Form>(b"{}").unwrap_err();
        assert!(message(missing).contains("missing field `email`"));
        let wrong = parse_json::<Form>(br#"{"email": 5}"#).unwrap_err();
        assert!(message(wrong).contains("field `email`: invalid type"));
        let nested = parse_json::<Form>(br#"{"email": "a", "nested": {"count": "x"}}"#);
        assert!(message(nested.unwrap_err()).contains("field `nested.count`"));
        let malformed = parse_json::<Form>(b"{\"email\": ").unwrap_err();
        assert!(message(malformed).contains("Malformed JSON"));
    }
}
