//! The Cohort server: directory, audit log, authentication and the HTTP API
//! over them. `main.rs` is a thin command-line shell around [`server`].

pub mod access;
pub mod api;
pub mod audit;
pub mod auth;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod csv;
pub mod devices;
pub mod directory;
pub mod error;
pub mod expression;
pub mod federation;
pub mod groups;
pub(crate) mod id_pair;
pub mod json;
pub mod limits;
pub mod migrations;
pub(crate) mod net;
pub mod outbound;
pub mod page;
pub mod plugins;
pub mod provisioning;
pub mod server;
pub mod serving;
pub mod sessions;
