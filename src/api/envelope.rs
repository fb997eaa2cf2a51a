//! The success envelope; errors are rendered by `error.rs`, lists by `pagination.rs`.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::catalogue::{Code, Lang};
use super::request::request_context;

/// A successful answer: `{"code": 200, "msg": "success", "data": ...}`.
#[derive(Serialize, ToSchema)]
pub struct SuccessBody<T> {
    #[schema(example = 200)]
    pub code: u16,
    #[schema(example = "success")]
    pub msg: &'static str,
    pub data: T,
}

/// `200` with `data` in the envelope, `msg` in the request's language.
pub fn ok<T: Serialize>(data: T) -> HttpResponse {
    // The contract spells the English message "success"; the catalogue's Chinese one is kept.
    let msg = match request_context().lang {
        Lang::En => "success",
        Lang::Zh => Code::SUCCESS.info().message_zh,
    };
    HttpResponse::build(StatusCode::OK).json(SuccessBody {
        code: 200,
        msg,
        data,
    })
}
