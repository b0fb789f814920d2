//! The one place the host generates bindings for `wit/`. Every other module
//! uses the types re-exported from here, so a WIT change shows up as compile
//! errors in exactly the code that must adapt.

#![allow(missing_docs, clippy::all)]

/// The `rule-evaluator` world; also the home of the shared `types` and `host`
/// interfaces, which the other worlds reuse.
pub mod rule_evaluator {
    wasmtime::component::bindgen!({
        path: "../wit/cohort-plugin@0.1.0",
        world: "rule-evaluator",
    });
}

/// The `directory-importer` world.
pub mod directory_importer {
    wasmtime::component::bindgen!({
        path: "../wit/cohort-plugin@0.1.0",
        world: "directory-importer",
        with: {
            "cohort:plugin/types": crate::plugins::bindings::rule_evaluator::cohort::plugin::types,
            "cohort:plugin/host": crate::plugins::bindings::rule_evaluator::cohort::plugin::host,
        },
    });
}

/// The `idp-connector` world.
pub mod idp_connector {
    wasmtime::component::bindgen!({
        path: "../wit/cohort-plugin@0.1.0",
        world: "idp-connector",
        with: {
            "cohort:plugin/types": crate::plugins::bindings::rule_evaluator::cohort::plugin::types,
            "cohort:plugin/host": crate::plugins::bindings::rule_evaluator::cohort::plugin::host,
        },
    });
}

pub use directory_importer::exports::cohort::plugin::importer;
pub use idp_connector::exports::cohort::plugin::idp;
pub use rule_evaluator::cohort::plugin::host;
pub use rule_evaluator::cohort::plugin::types;
pub use rule_evaluator::exports::cohort::plugin::rules;
