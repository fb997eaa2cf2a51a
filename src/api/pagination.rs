//! The one way every list is paged: `?page=&page_size=` parsed and bounded once, `LIMIT` and
//! `OFFSET` computed without overflow, and the answer's `{items, total, page, page_size}`. The
//! total comes from its own count, so it stays right on a page past the end.

use actix_web::HttpResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::envelope::ok;
use super::error::ApiError;

/// `?page=&page_size=` of every list; page from 1, page_size at most 100.
#[derive(Debug, Clone, Copy, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page number, from 1.
    pub page: Option<u32>,
    /// Items per page, 1 to 100 (20 by default).
    pub page_size: Option<u32>,
}

/// A validated page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub page: u32,
    pub page_size: u32,
}

impl PageQuery {
    pub const DEFAULT_SIZE: u32 = 20;
    pub const MAX_SIZE: u32 = 100;

    /// The page and page size, validated; the error names the parameter.
    pub fn resolve(self) -> Result<PageRequest, ApiError> {
        let page = self.page.unwrap_or(1);
        let page_size = self.page_size.unwrap_or(Self::DEFAULT_SIZE);
        if page == 0 {
            return Err(ApiError::bad_request("`page` starts at 1."));
        }
        if page_size == 0 || page_size > Self::MAX_SIZE {
            return Err(ApiError::bad_request(
                "`page_size` must be between 1 and 100.",
            ));
        }
        Ok(PageRequest { page, page_size })
    }
}

impl PageRequest {
    /// `LIMIT` of the page's query.
    pub fn limit(self) -> i64 {
        i64::from(self.page_size)
    }

    /// `OFFSET` of the page's query; in i64, so no page number can overflow it.
    pub fn offset(self) -> i64 {
        (i64::from(self.page) - 1) * i64::from(self.page_size)
    }

    /// `200` with this page of `items` out of `total`.
    pub fn answer<T: Serialize>(self, items: Vec<T>, total: i64) -> HttpResponse {
        ok(Page {
            items,
            total,
            page: self.page,
            page_size: self.page_size,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_bounded_and_offsets_do_not_overflow() {
        let last = PageQuery {
            page: Some(u32::MAX),
            page_size: Some(100),
        }
        .resolve()
        .unwrap();
        assert_eq!(last.offset(), (i64::from(u32::MAX) - 1) * 100);
        assert_eq!(PageQuery::default().resolve().unwrap().limit(), 20);
        for (page, page_size) in [(Some(0), None), (None, Some(0)), (None, Some(101))] {
            assert!(PageQuery { page, page_size }.resolve().is_err());
        }
    }
}
