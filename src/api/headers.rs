//! Headers carried between actix's `http` 0.2 types and hyper's `http` 1.x ones (the server
//! speaks the second, the actix application the first). Neither crate converts to the other:
//! each name and value is carried as bytes. A name or value one side refuses is left out.

/// Appends `from` (actix's) to `into` (hyper's).
pub fn into_http1(from: &actix_web::http::header::HeaderMap, into: &mut http::HeaderMap) {
    into.reserve(from.len());
    for (name, value) in from {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_str().as_bytes()),
            http::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            into.append(name, value);
        }
    }
}

/// Appends `from` (hyper's) to `into` (actix's).
pub fn into_actix(from: &http::HeaderMap, into: &mut actix_web::http::header::HeaderMap) {
    use actix_web::http::header::{HeaderName, HeaderValue};
    for (name, value) in from {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            into.append(name, value);
        }
    }
}
