//! Approximate byte sizes of values crossing the plugin boundary, for the
//! input and output caps. Approximate on purpose: the caps exist to stop a
//! plugin (or a caller) from making the host buffer without bound, and a
//! count of payload bytes plus a fixed cost per element does that.

use super::bindings::{host, idp, importer, rules, types};

/// Bytes a value takes, roughly as the canonical ABI lays it out.
pub trait Footprint {
    /// The size in bytes.
    fn footprint(&self) -> usize;
}

impl Footprint for String {
    fn footprint(&self) -> usize {
        self.len() + 8
    }
}

impl Footprint for () {
    fn footprint(&self) -> usize {
        0
    }
}

impl<T: Footprint> Footprint for [T] {
    fn footprint(&self) -> usize {
        8 + self.iter().map(Footprint::footprint).sum::<usize>()
    }
}

impl<T: Footprint> Footprint for Vec<T> {
    fn footprint(&self) -> usize {
        self.as_slice().footprint()
    }
}

impl<T: Footprint> Footprint for Option<T> {
    fn footprint(&self) -> usize {
        4 + self.as_ref().map_or(0, Footprint::footprint)
    }
}

impl<T: Footprint, E: Footprint> Footprint for Result<T, E> {
    fn footprint(&self) -> usize {
        4 + match self {
            Ok(v) => v.footprint(),
            Err(e) => e.footprint(),
        }
    }
}

impl Footprint for types::Value {
    fn footprint(&self) -> usize {
        8 + match self {
            types::Value::Text(s) => s.len(),
            types::Value::TextList(l) => l.footprint(),
            _ => 8,
        }
    }
}

impl Footprint for types::Attribute {
    fn footprint(&self) -> usize {
        self.name.footprint() + self.value.footprint()
    }
}

impl Footprint for types::AttributeDef {
    fn footprint(&self) -> usize {
        self.name.footprint() + 8
    }
}

impl Footprint for types::DirectoryRecord {
    fn footprint(&self) -> usize {
        4 + self.external_id.footprint() + self.attributes.footprint()
    }
}

impl Footprint for types::ConfigEntry {
    fn footprint(&self) -> usize {
        self.name.footprint()
            + 8
            + match &self.value {
                types::ConfigValue::Text(s) | types::ConfigValue::Secret(s) => s.len(),
                types::ConfigValue::TextList(l) => l.footprint(),
                _ => 8,
            }
    }
}

impl Footprint for types::ConfigField {
    fn footprint(&self) -> usize {
        self.name.footprint() + self.label.footprint() + self.help.footprint() + 8
    }
}

impl Footprint for types::PluginInfo {
    fn footprint(&self) -> usize {
        self.display_name.footprint() + self.description.footprint() + self.config.footprint()
    }
}

impl Footprint for types::ConfigError {
    fn footprint(&self) -> usize {
        match self {
            types::ConfigError::Missing(s) | types::ConfigError::Other(s) => s.footprint(),
            types::ConfigError::Invalid(p) => p.field.footprint() + p.message.footprint(),
        }
    }
}

impl Footprint for host::HttpError {
    fn footprint(&self) -> usize {
        64
    }
}

impl Footprint for importer::Page {
    fn footprint(&self) -> usize {
        self.records.footprint()
            + self
                .problems
                .iter()
                .map(|p| p.external_id.footprint() + p.message.footprint())
                .sum::<usize>()
            + self.next_cursor.footprint()
    }
}

impl Footprint for importer::ImportError {
    fn footprint(&self) -> usize {
        match self {
            importer::ImportError::Config(c) => c.footprint(),
            importer::ImportError::Unauthorized(s)
            | importer::ImportError::BadResponse(s)
            | importer::ImportError::Other(s) => s.footprint(),
            _ => 16,
        }
    }
}

impl Footprint for idp::ProviderEndpoints {
    fn footprint(&self) -> usize {
        self.issuer.footprint()
            + self.issuer_aliases.footprint()
            + self.scopes.footprint()
            + self
                .authorize_params
                .iter()
                .map(|(k, v)| k.len() + v.len() + 16)
                .sum::<usize>()
    }
}

impl Footprint for idp::MappedIdentity {
    fn footprint(&self) -> usize {
        self.subject.footprint() + self.attributes.footprint()
    }
}

impl Footprint for idp::UserPage {
    fn footprint(&self) -> usize {
        self.users.footprint() + self.next_cursor.footprint()
    }
}

impl Footprint for idp::ConnectorError {
    fn footprint(&self) -> usize {
        match self {
            idp::ConnectorError::Config(c) => c.footprint(),
            idp::ConnectorError::Rejected(s)
            | idp::ConnectorError::BadResponse(s)
            | idp::ConnectorError::Other(s) => s.footprint(),
            idp::ConnectorError::Http(_) => 64,
        }
    }
}

impl Footprint for rules::EvaluatorInfo {
    fn footprint(&self) -> usize {
        self.display_name.footprint() + self.language.footprint() + self.description.footprint()
    }
}

impl Footprint for rules::RuleSource {
    fn footprint(&self) -> usize {
        self.text.footprint()
    }
}

impl Footprint for rules::SubjectBatch {
    fn footprint(&self) -> usize {
        self.attributes.footprint()
            + self.text.len()
            + self.row_offsets.len() * 4
            + self.cells.len() * 24
    }
}

impl Footprint for rules::Evaluation {
    fn footprint(&self) -> usize {
        self.matches.len() * 8
            + self
                .explanations
                .iter()
                .map(|x| 16 + x.at.footprint() + x.detail.footprint())
                .sum::<usize>()
            + self
                .errors
                .iter()
                .map(|x| 8 + x.message.footprint())
                .sum::<usize>()
    }
}

impl Footprint for rules::EvaluateError {
    fn footprint(&self) -> usize {
        match self {
            rules::EvaluateError::InvalidBatch(s) | rules::EvaluateError::Other(s) => s.footprint(),
        }
    }
}
