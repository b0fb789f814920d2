//! Identity providers: configuration, and discovery checked on save.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cohort_storage::{Store, WriteTxn};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::layout::{IDP_NAMES, IDPS};
use super::provider::{Discovered, Idp, IdpInput};
use crate::audit::{self, Record};
use crate::auth::{ManagePlugins, Mutation, Read};
use crate::clock::Clock;
use crate::directory::decode_patch;
use crate::error::DomainError;
use crate::outbound::Outbound;
use crate::plugins::bindings::idp::ProviderEndpoints;
use crate::plugins::bindings::types::ConfigValue;
use crate::plugins::{Instances, Registry, World};

/// How long discovery may take when an IdP is saved.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The federation service.
#[derive(Clone)]
pub struct Federation {
    store: Store,
    clock: Arc<dyn Clock>,
    registry: Registry,
    instances: Instances,
    outbound: Arc<Outbound>,
    http: reqwest::Client,
}

const READ_ONLY: &[(&str, &str)] = &[
    ("id", "is assigned by Cohort"),
    ("connector", "follows the instance"),
    ("instance_id", "is set through `instance`"),
    ("discovered", "is read from the provider"),
    ("created_at", "is set by Cohort"),
    ("updated_at", "is set by Cohort"),
    ("version", "is set by Cohort; send it as If-Match instead"),
];

impl Federation {
    /// The service over `store`; connector settings live in `instances`;
    /// every request to a provider goes through `outbound`.
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        registry: Registry,
        instances: Instances,
        outbound: Arc<Outbound>,
    ) -> Result<Federation, DomainError> {
        let http = outbound
            .client(DISCOVERY_TIMEOUT)
            .map_err(|e| DomainError::Internal(format!("the outbound HTTP client: {e}")))?;
        Ok(Federation {
            store,
            clock,
            registry,
            instances,
            outbound,
            http,
        })
    }

    /// The outbound policy and clients provider requests go through.
    pub(crate) fn outbound(&self) -> &Arc<Outbound> {
        &self.outbound
    }

    /// Every IdP, by name. IdPs are few and configured by hand.
    pub fn list(&self, _: &Read) -> Result<Vec<Idp>, DomainError> {
        let mut out: Vec<Idp> = self
            .store
            .scan(IDPS, b"", None, false)
            .map(|r| {
                let (_, v) = r?;
                Ok(cohort_storage::decode_json(IDPS, &v)?)
            })
            .collect::<Result<_, DomainError>>()?;
        out.sort_by_key(|i| i.name.to_lowercase());
        Ok(out)
    }

    /// One IdP.
    pub fn get(&self, _: &Read, id: &Uuid) -> Result<Idp, DomainError> {
        self.load(id)
    }

    pub(crate) fn load(&self, id: &Uuid) -> Result<Idp, DomainError> {
        self.store
            .get_json(IDPS, id.as_bytes())?
            .ok_or_else(|| DomainError::not_found("identity provider", id))
    }

    /// The instance `reference` names (id or name), which must configure an
    /// `idp-connector` plugin.
    fn instance(
        &self,
        reference: &str,
    ) -> Result<crate::plugins::instances::Instance, DomainError> {
        let found = self
            .instances
            .list()?
            .into_iter()
            .find(|i| i.id == reference || i.name == reference)
            .ok_or_else(|| {
                DomainError::invalid("instance", format!("no plugin instance {reference:?}"))
            })?;
        let world = self.registry.manifest(&found.plugin).map(|m| m.world);
        if world != Some(World::IdpConnector) {
            return Err(DomainError::invalid(
                "instance",
                format!(
                    "{:?} configures {}, which is not an IdP connector",
                    found.name, found.plugin
                ),
            ));
        }
        Ok(found)
    }

    /// Now, by the service's clock.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// What the connector derives from the instance settings: issuer,
    /// aliases, scopes and extra authorization parameters.
    pub(crate) async fn endpoints(&self, idp: &Idp) -> Result<ProviderEndpoints, DomainError> {
        self.instance_endpoints(&idp.instance_id).await
    }

    async fn instance_endpoints(
        &self,
        instance_id: &str,
    ) -> Result<ProviderEndpoints, DomainError> {
        let (manifest, config) = self.instances.plugin_config(instance_id)?;
        let plugin = self
            .registry
            .callable(&manifest.name, World::IdpConnector)
            .map_err(|e| DomainError::invalid("instance", e.to_string()))?;
        let runtime = Arc::clone(self.registry.runtime());
        tokio::task::spawn_blocking(move || runtime.idp_endpoints(&plugin, &config))
            .await
            .map_err(|e| DomainError::invalid("instance", e.to_string()))?
            .map_err(|e| DomainError::invalid("instance", e.to_string()))?
            .map_err(|e| {
                DomainError::invalid(
                    "instance",
                    crate::plugins::instances::connector_error_message(e),
                )
            })
    }

    /// The client id and secret Cohort is registered with at the provider.
    /// Every connector has these two settings; the host runs the protocol,
    /// so it reads them.
    pub(crate) fn client_credentials(&self, idp: &Idp) -> Result<(String, String), DomainError> {
        let (_, config) = self.instances.plugin_config(&idp.instance_id)?;
        let get = |name: &str| {
            config
                .iter()
                .find(|e| e.name == name)
                .and_then(|e| match &e.value {
                    ConfigValue::Text(s) | ConfigValue::Secret(s) => Some(s.trim().to_string()),
                    _ => None,
                })
        };
        let id = get("client_id").ok_or_else(|| {
            DomainError::invalid("instance", "the connector instance has no client_id")
        })?;
        Ok((id, get("client_secret").unwrap_or_default()))
    }

    /// Asks the connector where the provider is, then reads its discovery
    /// document and key set. Every failure is the admin's to fix, so each
    /// says what was tried.
    async fn discover(&self, instance_id: &str) -> Result<Discovered, DomainError> {
        let endpoints = self.instance_endpoints(instance_id).await?;
        let (metadata, keys) = super::discovery::fetch(
            &self.outbound,
            &self.http,
            &endpoints.issuer,
            &endpoints.issuer_aliases,
        )
        .await?;
        let signing_algorithms: Vec<String> = metadata
            .id_token_signing_alg_values_supported()
            .iter()
            .map(|a| {
                serde_json::to_value(a)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            })
            .filter(|a| !a.is_empty() && a != "none")
            .collect();
        if signing_algorithms.is_empty() {
            return Err(DomainError::invalid(
                "instance",
                "the provider advertises no ID token signing algorithm Cohort accepts (`none` never is)",
            ));
        }
        Ok(Discovered {
            issuer: metadata.issuer().to_string(),
            authorization_endpoint: metadata.authorization_endpoint().to_string(),
            token_endpoint: metadata.token_endpoint().map(|u| u.to_string()),
            jwks_uri: metadata.jwks_uri().to_string(),
            signing_algorithms,
            token_auth_methods: metadata
                .token_endpoint_auth_methods_supported()
                .map(|methods| {
                    methods
                        .iter()
                        .filter_map(|m| {
                            serde_json::to_value(m)
                                .ok()
                                .and_then(|v| v.as_str().map(String::from))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            keys: keys.keys.len(),
            checked_at: self.clock.now(),
        })
    }

    /// Creates an IdP, after checking its connector and the provider's
    /// discovery.
    pub async fn create(
        &self,
        cap: &ManagePlugins<'_>,
        input: IdpInput,
    ) -> Result<Idp, DomainError> {
        check(&input)?;
        let instance = self.instance(&input.instance)?;
        let discovered = self.discover(&instance.id).await?;
        let now = self.clock.now();
        let idp = Idp {
            id: Uuid::now_v7(),
            name: input.name,
            instance_id: instance.id,
            connector: instance.plugin,
            matching: input.matching,
            jit: input.jit,
            enabled: input.enabled,
            discovered,
            created_at: now,
            updated_at: now,
            version: 1,
        };
        let actor = cap.actor().clone();
        let out = idp.clone();
        self.store
            .write(|txn| put(txn, &actor, "idp.create", None, &idp))?
            .durable()
            .await?;
        Ok(out)
    }

    /// Changes an IdP with a JSON merge patch. Discovery is checked again
    /// when the connector instance changes or the IdP is enabled.
    pub async fn update(
        &self,
        cap: &ManagePlugins<'_>,
        id: &Uuid,
        patch: &Value,
        if_match: Option<u64>,
    ) -> Result<Idp, DomainError> {
        let before = self.load(id)?;
        if let Some(v) = if_match
            && v != before.version
        {
            return Err(DomainError::VersionMismatch {
                current: before.version,
            });
        }
        let input: IdpInput = decode_patch(&IdpInput::from(&before), patch, READ_ONLY)?;
        check(&input)?;
        let instance = self.instance(&input.instance)?;
        // Discovery is checked again when the provider changes or the IdP
        // is put back in use, not to turn it off: an admin must be able to
        // disable an IdP while its provider is down.
        let recheck = instance.id != before.instance_id || (input.enabled && !before.enabled);
        let discovered = if recheck {
            self.discover(&instance.id).await?
        } else {
            before.discovered.clone()
        };
        let after = Idp {
            name: input.name,
            instance_id: instance.id,
            connector: instance.plugin,
            matching: input.matching,
            jit: input.jit,
            enabled: input.enabled,
            discovered,
            updated_at: self.clock.now(),
            version: before.version + 1,
            ..before.clone()
        };
        let actor = cap.actor().clone();
        let out = after.clone();
        self.store
            .write(|txn| {
                let current = txn
                    .get_json::<Idp>(IDPS, id.as_bytes())?
                    .ok_or_else(|| DomainError::not_found("identity provider", id))?;
                if current.version != before.version {
                    return Err(DomainError::VersionMismatch {
                        current: current.version,
                    });
                }
                put(txn, &actor, "idp.update", Some(&before), &after)
            })?
            .durable()
            .await?;
        Ok(out)
    }

    /// Deletes an IdP. Its connector instance stays.
    pub async fn delete(
        &self,
        cap: &ManagePlugins<'_>,
        id: &Uuid,
        if_match: Option<u64>,
    ) -> Result<(), DomainError> {
        let actor = cap.actor().clone();
        let now = self.clock.now();
        self.store
            .write(|txn| {
                let idp = txn
                    .get_json::<Idp>(IDPS, id.as_bytes())?
                    .ok_or_else(|| DomainError::not_found("identity provider", id))?;
                if let Some(v) = if_match
                    && v != idp.version
                {
                    return Err(DomainError::VersionMismatch {
                        current: idp.version,
                    });
                }
                self.check_unrouted(txn, id)?;
                txn.delete(IDPS, id.as_bytes());
                txn.delete(IDP_NAMES, idp.name.to_lowercase().as_bytes());
                audit::record(
                    txn,
                    now,
                    &actor,
                    Record {
                        action: "idp.delete",
                        resource_type: "idp",
                        resource_id: id.to_string(),
                        changes: audit::diff(Some(&idp), None::<&Idp>),
                    },
                )?;
                Ok(())
            })?
            .durable()
            .await?;
        Ok(())
    }
}

impl Federation {
    /// The routing document (everyone signs in locally until it is set).
    pub fn routing(&self, _: &Read) -> Result<super::Routing, DomainError> {
        super::routing::load(&self.store)
    }

    /// Replaces the routing document.
    pub async fn set_routing(
        &self,
        cap: &ManagePlugins<'_>,
        input: super::RoutingInput,
        if_match: Option<u64>,
    ) -> Result<super::Routing, DomainError> {
        let now = self.clock.now();
        let users = crate::directory::schema(&self.store, crate::directory::SubjectKind::User)?;
        Ok(self
            .store
            .write(|txn| super::routing::replace(txn, cap, now, &users, input, if_match))?
            .durable()
            .await?)
    }

    /// Where `identifier` would sign in, with the IdP when routed to one;
    /// given upstream `claims`, also what the connector maps from them and
    /// which user they match. Nothing is signed in and nothing is stored.
    pub async fn simulate(
        &self,
        _: &Read,
        identifier: &str,
        claims: Option<Value>,
    ) -> Result<Simulation, DomainError> {
        if identifier.trim().is_empty() {
            return Err(DomainError::invalid(
                "identifier",
                "a username or an email is needed",
            ));
        }
        if claims.as_ref().is_some_and(|c| !c.is_object()) {
            return Err(DomainError::invalid(
                "claims",
                "must be a JSON object of claims",
            ));
        }
        let routing = super::routing::load(&self.store)?;
        let users = crate::directory::schema(&self.store, crate::directory::SubjectKind::User)?;
        let route = super::routing::route(&self.store, &users, &routing, identifier, self.now())?;
        let idp = match &route.target {
            super::Target::Idp { idp_id } => Some(self.load(idp_id)?),
            super::Target::Local => None,
        };
        let (mut identity, mut matched) = (None, None);
        if let (Some(idp), Some(claims)) = (&idp, claims) {
            let mapped = self.map_claims(idp, &claims).await?;
            let value = match mapped.attributes.get(&idp.matching.attribute) {
                Some(Value::String(s)) => Some(s.clone()),
                _ => None,
            };
            matched = Some(super::matching::match_identity(
                &self.store,
                &idp.discovered.issuer,
                &mapped.subject,
                &idp.matching.attribute,
                value.as_deref(),
                idp.jit,
            )?);
            identity = Some(mapped);
        }
        Ok(Simulation {
            route,
            idp,
            identity,
            matched,
        })
    }

    /// The connector's reading of `claims`: provider checks, and the
    /// directory attributes they give.
    pub(crate) async fn map_claims(
        &self,
        idp: &Idp,
        claims: &Value,
    ) -> Result<Identity, DomainError> {
        let (manifest, config) = self.instances.plugin_config(&idp.instance_id)?;
        let plugin = self
            .registry
            .callable(&manifest.name, World::IdpConnector)
            .map_err(|e| DomainError::invalid("instance", e.to_string()))?;
        let runtime = Arc::clone(self.registry.runtime());
        let json = claims.to_string();
        let mapped =
            tokio::task::spawn_blocking(move || runtime.idp_map_claims(&plugin, &config, &json))
                .await
                .map_err(|e| DomainError::invalid("claims", e.to_string()))?
                .map_err(|e| DomainError::invalid("claims", format!("the connector failed: {e}")))?
                .map_err(|e| {
                    DomainError::invalid(
                        "claims",
                        crate::plugins::instances::connector_error_message(e),
                    )
                })?;
        Ok(Identity {
            subject: mapped.subject,
            attributes: mapped
                .attributes
                .iter()
                .map(|a| {
                    (
                        a.name.clone(),
                        crate::plugins::instances::value_json(&a.value),
                    )
                })
                .collect(),
        })
    }

    /// Refuses to delete an IdP that routing sends users to.
    fn check_unrouted(&self, txn: &WriteTxn<'_>, id: &Uuid) -> Result<(), DomainError> {
        let routing = super::routing::load(txn)?;
        let targets = routing
            .rules
            .iter()
            .map(|r| (r.name.as_str(), &r.target))
            .chain(std::iter::once(("the default", &routing.default)));
        for (name, target) in targets {
            if matches!(target, super::Target::Idp { idp_id } if idp_id == id) {
                return Err(DomainError::Conflict {
                    code: "idp_in_use",
                    field: None,
                    message: format!(
                        "routing sends users to this identity provider ({name}); change the routing first"
                    ),
                });
            }
        }
        Ok(())
    }
}

/// What a sign-in would do.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Simulation {
    /// The routing decision.
    pub route: super::Route,
    /// The IdP it routes to, if any.
    pub idp: Option<Idp>,
    /// What the connector maps from the given claims.
    pub identity: Option<Identity>,
    /// Which user those claims match.
    pub matched: Option<super::matching::Match>,
}

/// An upstream identity, as the connector maps it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Identity {
    /// The provider's stable subject.
    pub subject: String,
    /// Directory attributes from the claims.
    #[schema(value_type = Object)]
    pub attributes: std::collections::BTreeMap<String, Value>,
}

fn check(input: &IdpInput) -> Result<(), DomainError> {
    let name = input.name.as_str();
    if name.trim().is_empty()
        || name.trim() != name
        || name.chars().count() > 100
        || name.chars().any(char::is_control)
    {
        return Err(DomainError::invalid(
            "name",
            "must be 1-100 characters, without control characters or surrounding spaces",
        ));
    }
    let a = input.matching.attribute.as_str();
    if a.is_empty() {
        return Err(DomainError::invalid(
            "matching.attribute",
            "names the directory attribute identities are matched on, such as email",
        ));
    }
    Ok(())
}

fn put(
    txn: &mut WriteTxn<'_>,
    actor: &crate::auth::Actor,
    action: &str,
    before: Option<&Idp>,
    after: &Idp,
) -> Result<(), DomainError> {
    let key = after.name.to_lowercase();
    let renamed = before.is_none_or(|b| b.name.to_lowercase() != key);
    if renamed {
        if txn.contains(IDP_NAMES, key.as_bytes())? {
            return Err(DomainError::Conflict {
                code: "name_taken",
                field: Some("name".into()),
                message: format!("an identity provider named {:?} already exists", after.name),
            });
        }
        if let Some(b) = before {
            txn.delete(IDP_NAMES, b.name.to_lowercase().as_bytes());
        }
        txn.put(IDP_NAMES, key.as_bytes(), after.id.as_bytes().to_vec());
    }
    txn.put_json(IDPS, after.id.as_bytes(), after)?;
    audit::record(
        txn,
        after.updated_at,
        actor,
        Record {
            action,
            resource_type: "idp",
            resource_id: after.id.to_string(),
            changes: audit::diff(before, Some(after)),
        },
    )?;
    Ok(())
}
