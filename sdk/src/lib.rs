//! Write Cohort plugins in Rust.
//!
//! A Cohort plugin is a WebAssembly component that targets one world of the
//! `cohort:plugin` WIT package (see `wit/` in the Cohort repository). This
//! crate hides the generated bindings behind one trait per plugin kind and a
//! registration macro:
//!
//! | kind | trait | macro |
//! |---|---|---|
//! | rule evaluator | [`rules::RuleEvaluator`] | [`export_rule_evaluator!`] |
//! | directory importer | [`importer::Importer`] | [`export_importer!`] |
//! | IdP connector | [`idp::IdpConnector`] | [`export_idp_connector!`] |
//!
//! Everything a plugin needs from outside the sandbox goes through [`host`]:
//! logging, the wall clock and outbound HTTP. When the crate is compiled for
//! the host machine instead of WebAssembly (for `cargo test`), those calls go
//! to a [`testing::FakeHost`] instead, so a plugin's logic can be unit-tested
//! natively with recorded HTTP responses.
//!
//! The SDK version tracks the WIT version it was generated from:
//! [`WIT_VERSION`].

#![deny(missing_docs)]

pub mod config;
pub mod encoding;
pub mod host;
pub mod idp;
pub mod importer;
pub mod rules;
pub mod testing;
mod values;

/// The `cohort:plugin` WIT version this SDK was generated from. Components
/// built with this SDK carry this version in their import and export names;
/// the host refuses components built against an incompatible version.
pub const WIT_VERSION: &str = "0.1.0";

/// Generated bindings. Not part of the SDK's stable surface: use the
/// re-exports instead. Public only so the export macros can reach it.
#[doc(hidden)]
#[allow(missing_docs, clippy::all, unsafe_op_in_unsafe_fn)]
pub mod bindings {
    /// Bindings for the `rule-evaluator` world (also the home of the shared
    /// `types` and `host` interfaces).
    pub mod rule_evaluator {
        wit_bindgen::generate!({
            path: "wit/cohort-plugin@0.1.0",
            world: "rule-evaluator",
            pub_export_macro: true,
            export_macro_name: "__export_rule_evaluator",
            default_bindings_module: "cohort_sdk::bindings::rule_evaluator",
            additional_derives: [PartialEq],
        });
    }
    /// Bindings for the `directory-importer` world.
    pub mod directory_importer {
        wit_bindgen::generate!({
            path: "wit/cohort-plugin@0.1.0",
            world: "directory-importer",
            pub_export_macro: true,
            export_macro_name: "__export_directory_importer",
            default_bindings_module: "cohort_sdk::bindings::directory_importer",
            with: {
                "cohort:plugin/types@0.1.0": crate::bindings::rule_evaluator::cohort::plugin::types,
                "cohort:plugin/host@0.1.0": crate::bindings::rule_evaluator::cohort::plugin::host,
            },
            additional_derives: [PartialEq],
        });
    }
    /// Bindings for the `idp-connector` world.
    pub mod idp_connector {
        wit_bindgen::generate!({
            path: "wit/cohort-plugin@0.1.0",
            world: "idp-connector",
            pub_export_macro: true,
            export_macro_name: "__export_idp_connector",
            default_bindings_module: "cohort_sdk::bindings::idp_connector",
            with: {
                "cohort:plugin/types@0.1.0": crate::bindings::rule_evaluator::cohort::plugin::types,
                "cohort:plugin/host@0.1.0": crate::bindings::rule_evaluator::cohort::plugin::host,
            },
            additional_derives: [PartialEq],
        });
    }
}

pub use bindings::rule_evaluator::cohort::plugin::types::{
    Attribute, AttributeDef, AttributeType, ConfigEntry, ConfigError, ConfigField, ConfigKind,
    ConfigValue, DirectoryRecord, FieldProblem, PluginInfo, SubjectKind, Value,
};
