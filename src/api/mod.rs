//! The HTTP face shared by every module: the code catalogue, the envelope and its one renderer,
//! the request context (request id, language, panic guard), cross-origin access for browsers and
//! the extractors whose errors name the field.

pub mod catalogue;
mod context;
mod cors;
mod envelope;
mod error;
mod extract;

pub use catalogue::{CATALOGUE, Code, CodeInfo, Lang, Module};
pub use context::{RequestContext, request_context, request_context_middleware};
pub use cors::{CrossOrigin, cors};
pub use envelope::{ErrorBody, Page, PageQuery, SuccessBody, ok, ok_page};
pub use error::{ApiError, Rendered};
pub use extract::{ApiJson, ApiQuery, MAX_BODY_BYTES, extractor_configs};
