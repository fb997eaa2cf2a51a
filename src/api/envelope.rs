//! The envelope every JSON answer carries, and the one function that renders it.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::catalogue::{Code, Lang};
use super::context::request_context;

/// A successful answer: `{"code": 200, "msg": "success", "data": ...}`.
#[derive(Serialize, ToSchema)]
pub struct SuccessBody<T> {
    #[schema(example = 200)]
    pub code: u16,
    #[schema(example = "success")]
    pub msg: &'static str,
    pub data: T,
}

/// An error answer. `sub_code` is present when a module code describes the error.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    #[schema(example = 402)]
    pub code: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = 40201)]
    pub sub_code: Option<u32>,
    #[schema(example = "Insufficient balance or call quota.")]
    pub msg: String,
    /// Always null on errors.
    #[schema(value_type = Option<Object>)]
    pub data: Option<()>,
    pub request_id: String,
}

impl ErrorBody {
    /// The one place an error body is made. `detail` names what was wrong (a field, a limit)
    /// and follows the catalogue's message.
    pub fn render(code: Code, detail: Option<&str>, lang: Lang, request_id: &str) -> ErrorBody {
        let info = code.info();
        let base = info.message(lang);
        let msg = match detail {
            Some(detail) => format!("{base} {detail}"),
            None => base.to_owned(),
        };
        ErrorBody {
            code: info.code,
            sub_code: info.sub_code,
            msg,
            data: None,
            request_id: request_id.to_owned(),
        }
    }
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

/// `?page=&page_size=` of every list; page from 1, page_size at most 100.
#[derive(Debug, Clone, Copy, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page number, from 1.
    pub page: Option<u32>,
    /// Items per page, 1 to 100 (20 by default).
    pub page_size: Option<u32>,
}

impl PageQuery {
    pub const DEFAULT_SIZE: u32 = 20;
    pub const MAX_SIZE: u32 = 100;

    /// The page and page size, validated; the error names the parameter.
    pub fn resolve(self) -> Result<(u32, u32), super::ApiError> {
        let page = self.page.unwrap_or(1);
        let size = self.page_size.unwrap_or(Self::DEFAULT_SIZE);
        if page == 0 {
            return Err(super::ApiError::bad_request("`page` starts at 1."));
        }
        if size == 0 || size > Self::MAX_SIZE {
            return Err(super::ApiError::bad_request(
                "`page_size` must be between 1 and 100.",
            ));
        }
        Ok((page, size))
    }
}

/// `data` of a list answer.
#[derive(Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: i64,
    pub page: u32,
    pub page_size: u32,
}

/// `200` with a page of items.
pub fn ok_page<T: Serialize>(items: Vec<T>, total: i64, page: u32, page_size: u32) -> HttpResponse {
    ok(Page {
        items,
        total,
        page,
        page_size,
    })
}
