"""An IdP connector to copy and adapt, in Python: a generic OpenID Connect provider.

The host runs the protocol itself (discovery, the authorization code flow
with PKCE, ID token validation). A connector says where the provider is
(``endpoints``), applies the provider's own checks to validated claims and
maps them to directory attributes (``map_claims``), and may list the
provider's users (``list_users``; this one cannot).

Every connector has ``client_id`` and ``client_secret`` fields: the host
reads those two by name to talk to the provider. Add provider settings
(a tenant, a hosted domain...) after them.

Build with ``cohort plugin build``, or by hand from this folder (``wit/`` and
``cohort_sdk/`` beside this file, as ``cohort plugin new`` writes them):

    componentize-py -d wit/cohort-plugin@0.1.0 -w idp-connector componentize app -o dist/my-idp.wasm

componentize-py looks for a class named after the exported interface
(``Idp``) in the ``app`` module.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import idp
from wit_world.imports import types

from cohort_sdk import Config, connector_errors, field, invalid
from cohort_sdk.idp import parse_claims, standard_attributes, string_claim

#: Scopes asked for at sign-in. The host puts `openid` first in any case.
SCOPES = ["openid", "email", "profile"]


class Idp(exports.Idp):
    def describe(self):
        # Must match plugin.toml's [[config]] entries: same fields, same order,
        # same name, kind and required.
        return types.PluginInfo(
            display_name="My OpenID Connect provider",
            description="Signs people in with an OpenID Connect provider and maps their claims.",
            config=[
                field(
                    "issuer",
                    "Issuer URL",
                    "The provider's issuer; Cohort reads <issuer>/.well-known/openid-configuration.",
                    "url",
                    True,
                ),
                field("client_id", "Client ID", "The client registered for Cohort at the provider.", "text", True),
                field(
                    "client_secret",
                    "Client secret",
                    "The client's secret. Stored encrypted; never shown again.",
                    "secret",
                    True,
                ),
            ],
        )

    def validate_config(self, config):
        # The host has checked kinds and required fields. Refuse what would
        # fail later with a less helpful message.
        config = Config(config)
        issuer = config.require_text("issuer")
        if "?" in issuer or "#" in issuer:
            raise Err(invalid("issuer", "give the issuer without a query or fragment"))
        if issuer.rstrip("/").endswith("/.well-known/openid-configuration"):
            raise Err(invalid("issuer", "give the issuer itself, not its discovery document"))
        config.require_text("client_id")

    # @connector_errors turns the SDK's failures (BadResponse, HTTP failures,
    # config errors) into the matching Err(connector-error).
    @connector_errors
    def endpoints(self, config):
        config = Config(config)
        return idp.ProviderEndpoints(
            # Used exactly as given: the ID token's `iss` must equal it.
            issuer=config.require_text("issuer"),
            # Other `iss` values of the same tenant; usually none.
            issuer_aliases=[],
            scopes=list(SCOPES),
            # Extra authorization request parameters, e.g. [("prompt", "select_account")].
            authorize_params=[],
        )

    @connector_errors
    def map_claims(self, config, claims):
        # The host has already checked signature, issuer, audience, expiry and
        # nonce. Provider rules go here: refuse with
        #     raise Err(idp.ConnectorError_Rejected("wrong tenant ..."))
        claims = parse_claims(claims)
        subject = string_claim(claims, "sub")
        # Only an email the provider vouches for may be matched against the
        # directory: a missing or false email_verified leaves it out.
        trust_email = claims.get("email_verified") is True
        # email, given_name -> first_name, family_name -> last_name,
        # name -> display_name. Map provider claims of your own with
        # cohort_sdk.idp.claim_attribute("department", claims.get("dept")).
        attributes = standard_attributes(claims, trust_email)
        return idp.MappedIdentity(subject=subject, attributes=attributes)

    def list_users(self, config, cursor):
        # The WIT contract: connectors without a user API return `other`.
        raise Err(idp.ConnectorError_Other("this connector cannot list users"))
