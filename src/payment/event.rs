//! The envelope of a Stripe event, as the webhook receives it and the effects read it.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

/// The envelope of every Stripe event; `data.object` is read per type.
#[derive(Deserialize)]
pub struct StripeEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub created: i64,
    pub data: EventData,
}

#[derive(Deserialize)]
pub struct EventData {
    pub object: Value,
}

impl StripeEvent {
    pub fn created_at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.created, 0).unwrap_or_default()
    }
}
