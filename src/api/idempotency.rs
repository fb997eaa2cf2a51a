//! `Idempotency-Key`: parsed once, with one limit, wherever a request may be repeated safely.

use actix_web::HttpRequest;

use super::error::ApiError;

/// A client's idempotency key: 1 to 255 visible characters once trimmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const HEADER: &'static str = "idempotency-key";
    pub const MAX_LEN: usize = 255;

    pub fn parse(raw: &str) -> Result<IdempotencyKey, ApiError> {
        let key = raw.trim();
        if key.is_empty() || key.len() > Self::MAX_LEN || key.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "The Idempotency-Key header must be 1 to 255 characters.",
            ));
        }
        Ok(IdempotencyKey(key.to_owned()))
    }

    /// The request's key, if it sent one (400 when it is malformed).
    pub fn of_request(req: &HttpRequest) -> Result<Option<IdempotencyKey>, ApiError> {
        match req.headers().get(Self::HEADER) {
            None => Ok(None),
            Some(value) => {
                let text = value.to_str().map_err(|_| {
                    ApiError::bad_request("The Idempotency-Key header must be visible ASCII.")
                })?;
                Self::parse(text).map(Some)
            }
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_trimmed_and_bounded() {
        assert_eq!(IdempotencyKey::parse(" k-1 ").unwrap().as_str(), "k-1");
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        for bad in ["", "   ", &"k".repeat(256)] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
