//! What the engine holds of a subject once loaded ([`Loaded`]). Both the replica, which keeps subjects in memory,
//! and a run's universe, which is built from the replica, depend on these;
//! neither depends on the other through them.

use uuid::Uuid;

use crate::directory::{AttrRef, Device, Subject, User, UserState};

/// A loaded user or device.
pub enum Loaded {
    /// A user.
    User(Box<User>),
    /// A device.
    Device(Box<Device>),
}

impl Loaded {
    /// Its id.
    pub fn id(&self) -> Uuid {
        match self {
            Loaded::User(u) => u.id,
            Loaded::Device(d) => d.id,
        }
    }

    /// A user's state; `None` for devices.
    pub fn state(&self) -> Option<UserState> {
        match self {
            Loaded::User(u) => Some(u.state),
            Loaded::Device(_) => None,
        }
    }

    /// An attribute's value, borrowed.
    pub fn attribute(&self, name: &str) -> Option<AttrRef<'_>> {
        match self {
            Loaded::User(u) => u.attribute_ref(name),
            Loaded::Device(d) => d.attribute_ref(name),
        }
    }
}

impl crate::expression::Related for Loaded {
    fn attribute(&self, name: &str) -> Option<AttrRef<'_>> {
        Loaded::attribute(self, name)
    }
}
