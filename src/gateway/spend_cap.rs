//! Per-key spend caps (issue 14): a key may spend at most so many credits per calendar month
//! (UTC) or in total, enforced the way the account's credits are. What a key spent is its
//! settled usage (`usage_hourly`); an instance spends a key's credits only from a block it
//! reserved under the cap (`key_spend_leases`, one row per key and instance), and a block is
//! granted only from the cap less the period's usage less every instance's unsettled blocks.
//! Settlement moves spending from a block into usage in one transaction, which leaves that
//! headroom as it was, so a cap is never passed: not by concurrent calls, not across instances.
//! A dead instance's blocks expire like its leases (what it spent unsettled is then not counted
//! against the cap, the same bound as its credits).
//!
//! This file holds the cap itself; `key_blocks.rs` reserves and settles the blocks, and the
//! wallet (`wallet.rs`) counts what calls do with them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CapPeriod {
    /// The calendar month (UTC).
    Month,
    /// The key's whole life.
    Total,
}

impl CapPeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            CapPeriod::Month => "month",
            CapPeriod::Total => "total",
        }
    }

    pub fn parse(period: &str) -> Option<CapPeriod> {
        match period {
            "month" => Some(CapPeriod::Month),
            "total" => Some(CapPeriod::Total),
            _ => None,
        }
    }
}

/// At most `credits` per `period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpendCap {
    pub credits: i64,
    pub period: CapPeriod,
}

impl SpendCap {
    /// From the two columns of `api_keys` (the table's constraint keeps them both or neither).
    pub fn from_columns(credits: Option<i64>, period: Option<&str>) -> Option<SpendCap> {
        Some(SpendCap {
            credits: credits?,
            period: CapPeriod::parse(period?)?,
        })
    }
}
