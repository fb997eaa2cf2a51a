//! Reading the fields of Stripe's objects as webhooks deliver them (JSON of any API version).

use chrono::{DateTime, Utc};
use serde_json::Value;

pub fn text<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(value, |value, key| value.get(key))?
        .as_str()
        .filter(|s| !s.is_empty())
}

pub fn number(value: &Value, path: &[&str]) -> Option<i64> {
    path.iter()
        .try_fold(value, |value, key| value.get(key))?
        .as_i64()
}

pub fn boolean(value: &Value, path: &[&str]) -> Option<bool> {
    path.iter()
        .try_fold(value, |value, key| value.get(key))?
        .as_bool()
}

/// An id field that may be a plain id or an expanded object.
pub fn id_of<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    match value.get(key)? {
        Value::String(id) => Some(id.as_str()),
        object @ Value::Object(_) => text(object, &["id"]),
        _ => None,
    }
}

pub fn timestamp(seconds: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(seconds, 0)
}
