//! The HTTP face shared by every module: the code catalogue, the envelope and its one renderer,
//! the request context (request id, language, panic guard), cross-origin access for browsers and
//! the extractors whose errors name the field.

pub mod catalogue;
mod client;
mod cors;
mod envelope;
mod error;
mod extract;
pub mod headers;
mod idempotency;
mod middleware;
mod pagination;
mod request;

pub use catalogue::{CATALOGUE, Code, CodeInfo, Lang, Module};
pub use client::{client_ip, client_ip_of, client_key, throttle_key};
pub use cors::{CrossOrigin, cors};
pub use envelope::{SuccessBody, ok};
pub use error::{ApiError, ErrorBody, Rendered, is_outage};
pub use extract::{
    ApiJson, ApiQuery, Authorized, MAX_BODY_BYTES, PathAndBody, extractor_configs, present,
};
pub use idempotency::IdempotencyKey;
pub use middleware::{in_request, request_context_middleware};
pub use pagination::{Page, PageQuery, PageRequest};
pub use request::{HYPER_REQUEST_ID, RequestContext, request_context};
