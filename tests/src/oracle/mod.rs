//! A reference evaluator for group memberships, written for clarity rather
//! than speed, and sharing no code with the engine it checks (nothing from
//! `host/src/groups`, `host/src/expression` or the `rules-standard`
//! plugin). It reads the directory and the group definitions back through
//! the public API, decides every membership from docs/groups.md and
//! docs/rules-standard.md alone, and compares with what the server says.
//!
//! What it covers: every attribute operator of `rules-standard` on text,
//! text-list, number, boolean and absolute date attributes, `ignore_case`,
//! `any` blocks, exclusions, `member_of` / `not_member_of`, conditions on
//! related subjects with their quantifiers, state scoping, exemptions
//! without an expiry, manual members, review mode before any suggestion is
//! accepted, and the CEL subset of [`cel::Cel`]. Relative dates (`now-30d`)
//! are left out: the oracle cannot know the server's evaluation time.

pub mod cel;
mod rule;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Map, Value};

use crate::Api;
pub use cel::{Cel, Expressions};

/// Users or devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    User,
    Device,
}

impl Kind {
    pub fn parse(s: &str) -> Kind {
        match s {
            "user" => Kind::User,
            "device" => Kind::Device,
            other => panic!("unknown subject kind {other:?}"),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Device => "device",
        }
    }
}

/// A user or a device: its id, its state (users), and its attributes with
/// the missing ones (null, empty lists) left out.
#[derive(Clone, Debug)]
pub struct Subject {
    pub id: String,
    pub label: String,
    pub attrs: Map<String, Value>,
}

impl Subject {
    fn from_api(v: &Value, label_field: &str) -> Subject {
        let mut attrs = Map::new();
        let top = v.as_object().expect("a subject is an object");
        let custom = top
            .get("custom_attributes")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (k, x) in top.iter().chain(custom.iter()) {
            let missing =
                x.is_null() || x.as_array().is_some_and(Vec::is_empty) || k == "custom_attributes";
            if !missing && k != "version" {
                attrs.insert(k.clone(), x.clone());
            }
        }
        Subject {
            id: v["id"].as_str().expect("id").to_string(),
            label: v[label_field].as_str().unwrap_or_default().to_string(),
            attrs,
        }
    }

    pub fn state(&self) -> &str {
        self.attrs
            .get("state")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

/// Where a membership comes from, as the API names it.
pub type Source = &'static str;

/// A group as the API shows it, with its exemptions.
#[derive(Clone, Debug)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub kind: Kind,
    pub dynamic: bool,
    pub rule: Option<Value>,
    pub exclusion: Option<Value>,
    pub review: bool,
    pub member_states: Vec<String>,
    /// Subject → `always` / `never`.
    pub exemptions: HashMap<String, String>,
}

/// Everything the decision depends on.
#[derive(Clone, Debug, Default)]
pub struct World {
    /// (kind, attribute) → type (`string`, `string_list`, `number`,
    /// `boolean`, `date`).
    pub schema: HashMap<(Kind, String), String>,
    pub users: Vec<Subject>,
    pub devices: Vec<Subject>,
    /// (user, device) bindings.
    pub links: BTreeSet<(String, String)>,
    pub groups: Vec<Group>,
}

/// The decision for every group: subject → source, and for groups in
/// review mode the suggestions (subject → `add` / `remove`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Memberships {
    pub members: BTreeMap<String, BTreeMap<String, Source>>,
    pub suggestions: BTreeMap<String, BTreeMap<String, String>>,
}

impl World {
    /// Reads the directory and the groups back through the API.
    pub async fn read(api: &Api) -> World {
        let mut world = World::default();
        let attributes = api.get("/api/v1/attributes").await.expect(200).body;
        for a in attributes["items"].as_array().expect("items") {
            let kind = Kind::parse(a["subject"].as_str().expect("subject"));
            let name = a["name"].as_str().expect("name").to_string();
            world
                .schema
                .insert((kind, name), a["type"].as_str().expect("type").to_string());
        }
        for u in api.all_items("/api/v1/users").await {
            world.users.push(Subject::from_api(&u, "username"));
        }
        for d in api.all_items("/api/v1/devices").await {
            world.devices.push(Subject::from_api(&d, "hostname"));
        }
        for u in &world.users {
            for l in api
                .all_items(&format!("/api/v1/users/{}/devices", u.id))
                .await
            {
                let device = l["device_id"].as_str().expect("device_id").to_string();
                world.links.insert((u.id.clone(), device));
            }
        }
        for g in api.all_items("/api/v1/groups").await {
            let id = g["id"].as_str().expect("id").to_string();
            let mut exemptions = HashMap::new();
            for e in api
                .all_items(&format!("/api/v1/groups/{id}/exemptions"))
                .await
            {
                assert!(
                    e["expires_at"].is_null(),
                    "the reference evaluator does not model expiring exemptions: {e}"
                );
                exemptions.insert(
                    e["subject_id"].as_str().expect("subject_id").to_string(),
                    e["kind"].as_str().expect("kind").to_string(),
                );
            }
            let rule = |k: &str| Some(g[k].clone()).filter(|r| !r.is_null());
            world.groups.push(Group {
                name: g["name"].as_str().expect("name").to_string(),
                kind: Kind::parse(g["subject"].as_str().expect("subject")),
                dynamic: g["type"] == "dynamic",
                rule: rule("rule"),
                exclusion: rule("exclusion"),
                review: g["review"].as_bool().unwrap_or(false),
                member_states: g["member_states"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                exemptions,
                id,
            });
        }
        world
    }

    pub fn subjects(&self, kind: Kind) -> &[Subject] {
        match kind {
            Kind::User => &self.users,
            Kind::Device => &self.devices,
        }
    }

    /// Decides every membership. `manual` holds the members each group
    /// was given by hand (the test's own record of what it added).
    pub fn decide(
        &self,
        expressions: &Expressions,
        manual: &BTreeMap<String, BTreeSet<String>>,
    ) -> Memberships {
        let mut decider = rule::Decider::new(self, expressions);
        let mut out = Memberships::default();
        for g in &self.groups {
            let members = decider.members(&g.id, manual).clone();
            out.members.insert(g.id.clone(), members);
            if g.review && g.dynamic {
                out.suggestions
                    .insert(g.id.clone(), decider.suggestions(g, manual));
            }
        }
        out
    }
}

/// What the server says: every group's members with their source, and
/// the pending suggestions of groups in review mode.
pub async fn observed(api: &Api, world: &World) -> Memberships {
    let mut out = Memberships::default();
    for g in &world.groups {
        let mut members = BTreeMap::new();
        for m in api
            .all_items(&format!("/api/v1/groups/{}/members", g.id))
            .await
        {
            let source: Source = match m["source"].as_str() {
                Some("rule") => "rule",
                Some("manual") => "manual",
                Some("exemption") => "exemption",
                other => panic!("unknown membership source {other:?}"),
            };
            members.insert(
                m["subject_id"].as_str().expect("subject_id").to_string(),
                source,
            );
        }
        out.members.insert(g.id.clone(), members);
        if g.review && g.dynamic {
            let mut wanted = BTreeMap::new();
            for s in api
                .all_items(&format!("/api/v1/groups/{}/suggestions", g.id))
                .await
            {
                if s["dismissed"] != true {
                    wanted.insert(
                        s["subject_id"].as_str().expect("subject_id").to_string(),
                        s["action"].as_str().expect("action").to_string(),
                    );
                }
            }
            out.suggestions.insert(g.id.clone(), wanted);
        }
    }
    out
}

/// Reads everything back, decides, and returns every difference between
/// the reference and the server, spelled out; empty when they agree.
pub async fn differences(
    api: &Api,
    expressions: &Expressions,
    manual: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<String> {
    compare(api, expressions, manual).await.1
}

/// [`differences`], with the reference's decision, so that a test can
/// check that its random cases decided something.
pub async fn compare(
    api: &Api,
    expressions: &Expressions,
    manual: &BTreeMap<String, BTreeSet<String>>,
) -> (Memberships, Vec<String>) {
    let world = World::read(api).await;
    let want = world.decide(expressions, manual);
    let got = observed(api, &world).await;
    let label = |id: &str| {
        world
            .users
            .iter()
            .chain(&world.devices)
            .find(|s| s.id == id)
            .map_or_else(
                || format!("{id} (not in the directory)"),
                |s| s.label.clone(),
            )
    };
    let mut out = Vec::new();
    let mut involved = BTreeSet::new();
    for g in &world.groups {
        let (w, o) = (&want.members[&g.id], &got.members[&g.id]);
        let before = out.len();
        let ids: BTreeSet<&String> = w.keys().chain(o.keys()).collect();
        for id in ids {
            if w.get(id) != o.get(id) {
                // The server's own account, condition by condition.
                let explain = api
                    .get(&format!("/api/v1/groups/{}/members/{id}/explain", g.id))
                    .await
                    .body;
                out.push(format!(
                    "group {:?}: {} should be {:?}, the server has {:?}; it explains: {explain}",
                    g.name,
                    label(id),
                    w.get(id),
                    o.get(id)
                ));
            }
        }
        if let (Some(w), Some(o)) = (want.suggestions.get(&g.id), got.suggestions.get(&g.id))
            && w != o
        {
            out.push(format!(
                "group {:?}: suggestions should be {w:?}, the server has {o:?}",
                g.name
            ));
        }
        if out.len() > before {
            involved.insert(g.id.clone());
        }
    }
    if !out.is_empty() {
        // What a reader needs to see who is right.
        for g in world
            .groups
            .iter()
            .filter(|g| !g.name.contains(' ') || involved.contains(&g.id))
        {
            out.push(format!("  {g:?}"));
        }
        for s in world.users.iter().chain(&world.devices) {
            out.push(format!("  {} {}: {:?}", s.label, s.id, s.attrs));
        }
        out.push(format!("  links: {:?}", world.links));
    }
    (want, out)
}

/// Panics, listing every difference, unless the server agrees with the
/// reference evaluator on every membership.
pub async fn assert_agrees(
    api: &Api,
    expressions: &Expressions,
    manual: &BTreeMap<String, BTreeSet<String>>,
    when: &str,
) {
    let diff = differences(api, expressions, manual).await;
    assert!(
        diff.is_empty(),
        "{when}: the server and the reference evaluator disagree:\n{}",
        diff.join("\n")
    );
}
