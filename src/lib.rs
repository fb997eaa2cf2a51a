//! meterapi: the account-and-billing backend of a paid data API.
//!
//! `/myapi/...` is the account surface for frontends, `/api/v1/...` the metered gateway for API
//! clients. Every answer carries the envelope and the codes of [`api::catalogue`].

pub mod admin;
pub mod api;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod db;
pub mod gateway;
pub mod ledger;
pub mod limits;
pub mod mail;
pub mod ops;
pub mod payment;
pub mod plans;
pub mod serve;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod templates;

pub use config::Settings;
pub use serve::ServerHandle;
pub use startup::Application;
