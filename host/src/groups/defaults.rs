//! The groups a new directory starts with: All Users, All Devices, and one
//! device group per OS family. They are ordinary dynamic groups marked
//! built-in, so they cannot be deleted or have their rule changed.

use serde_json::json;

use super::Groups;
use super::layout::{GROUP_NAMES, name_key};
use super::model::{DEFAULT_EVALUATOR, Group, GroupType};
use crate::auth::Actor;
use crate::directory::{SubjectKind, UserState};
use crate::error::DomainError;

/// Marks that the built-in groups were created once; deleting data later
/// does not bring them back uninvited.
const SEEDED: &[u8] = b"\0built-in groups seeded";

fn defaults() -> Vec<(SubjectKind, &'static str, &'static str, serde_json::Value)> {
    let os = |family: &str| json!({"conditions": [{"attribute": "os_family", "operator": "equals", "values": [family]}]});
    vec![
        (
            SubjectKind::User,
            "All Users",
            "Every user, whatever their state.",
            json!({"conditions": [{"attribute": "id", "operator": "exists"}]}),
        ),
        (
            SubjectKind::Device,
            "All Devices",
            "Every device.",
            json!({"conditions": [{"attribute": "id", "operator": "exists"}]}),
        ),
        (
            SubjectKind::Device,
            "macOS Devices",
            "Devices running macOS.",
            os("macos"),
        ),
        (
            SubjectKind::Device,
            "Windows Devices",
            "Devices running Windows.",
            os("windows"),
        ),
        (
            SubjectKind::Device,
            "Linux Devices",
            "Devices running Linux.",
            os("linux"),
        ),
        (
            SubjectKind::Device,
            "iOS Devices",
            "iPhones and iPads.",
            os("ios"),
        ),
        (
            SubjectKind::Device,
            "Android Devices",
            "Devices running Android.",
            os("android"),
        ),
    ]
}

impl Groups {
    /// Creates the built-in groups once per directory. Their members are
    /// computed by the first full recompute (at start-up), since the rule
    /// evaluator may not be loaded yet when this runs.
    pub(super) fn seed_defaults(&self) -> Result<(), DomainError> {
        if self.store().get(GROUP_NAMES, SEEDED)?.is_some() {
            return Ok(());
        }
        let now = self.now();
        let actor = Actor::system("seed");
        self.store()
            .write(|txn| {
                for (subject, name, description, rule) in defaults() {
                    if txn.contains(GROUP_NAMES, &name_key(subject, name))? {
                        continue;
                    }
                    let group = Group {
                        id: uuid::Uuid::now_v7(),
                        name: name.into(),
                        subject,
                        description: Some(description.into()),
                        group_type: GroupType::Dynamic,
                        rule: Some(rule),
                        exclusion: None,
                        evaluator: DEFAULT_EVALUATOR.into(),
                        review: false,
                        member_states: match subject {
                            SubjectKind::User => {
                                vec![UserState::Active, UserState::Staged, UserState::Suspended]
                            }
                            SubjectKind::Device => Vec::new(),
                        },
                        built_in: true,
                        created_at: now,
                        updated_at: now,
                        version: 1,
                    };
                    self.put_group(txn, &actor, "group.create", None, &group)?;
                }
                txn.put(GROUP_NAMES, SEEDED, Vec::new());
                Ok::<_, DomainError>(())
            })?
            .durable_blocking()?;
        Ok(())
    }
}
