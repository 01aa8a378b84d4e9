"""Writes deploy/keycloak/carescore-realm.json and elsewhere-realm.json, the realms keycloak.sh imports.

    python deploy/keycloak/realms.py      (then commit the JSON files next to it)

LOCAL TEST REALMS: every password and client secret below is public, on purpose, for the tests and
`make keycloak-up`. Never import these files into a hospital's IdP.
"""

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent
ROLES = {
    "viewer": "Sees the scorecard page, KPIs, history, reports and the live stream",
    "clinician": "Acknowledges alerts for the units in the token's units claim",
    "ops": "Silences, dead letters, replay",
    "integration": "Feeds data in (ingest) and nothing else",
    "admin": "Everything",
}


def mapper(name, kind, **config):
    return {
        "name": name,
        "protocol": "openid-connect",
        "protocolMapper": kind,
        "consentRequired": False,
        "config": {k.replace("_", "."): v for k, v in config.items()},
    }


def scope_mappers(audience):
    return [
        mapper(
            "audience",
            "oidc-audience-mapper",
            included_custom_audience=audience,
            **{"access.token.claim": "true", "id.token.claim": "false", "introspection.token.claim": "true"},
        ),
        mapper(
            "realm roles as roles",
            "oidc-usermodel-realm-role-mapper",
            **{
                "claim.name": "roles",
                "multivalued": "true",
                "jsonType.label": "String",
                "access.token.claim": "true",
                "id.token.claim": "true",
                "userinfo.token.claim": "true",
                "introspection.token.claim": "true",
            },
        ),
        mapper(
            "units",
            "oidc-usermodel-attribute-mapper",
            **{
                "user.attribute": "units",
                "claim.name": "units",
                "multivalued": "true",
                "aggregate.attrs": "true",
                "jsonType.label": "String",
                "access.token.claim": "true",
                "id.token.claim": "true",
                "userinfo.token.claim": "true",
                "introspection.token.claim": "true",
            },
        ),
    ]


USER_PROFILE = {
    "attributes": [
        {
            "name": "username",
            "displayName": "${username}",
            "validations": {
                "length": {"min": 3, "max": 255},
                "username-prohibited-characters": {},
                "up-username-not-idn-homograph": {},
            },
            "permissions": {"view": ["admin", "user"], "edit": ["admin", "user"]},
            "multivalued": False,
        },
        {
            "name": "email",
            "displayName": "${email}",
            "validations": {"email": {}, "length": {"max": 255}},
            "permissions": {"view": ["admin", "user"], "edit": ["admin", "user"]},
            "multivalued": False,
        },
        {
            "name": "firstName",
            "displayName": "${firstName}",
            "validations": {"length": {"max": 255}, "person-name-prohibited-characters": {}},
            "permissions": {"view": ["admin", "user"], "edit": ["admin", "user"]},
            "multivalued": False,
        },
        {
            "name": "lastName",
            "displayName": "${lastName}",
            "validations": {"length": {"max": 255}, "person-name-prohibited-characters": {}},
            "permissions": {"view": ["admin", "user"], "edit": ["admin", "user"]},
            "multivalued": False,
        },
        {
            "name": "units",
            "displayName": "Care units (carescore unit ids)",
            "permissions": {"view": ["admin"], "edit": ["admin"]},
            "multivalued": True,
        },
    ],
    "groups": [
        {
            "name": "user-metadata",
            "displayHeader": "User metadata",
            "displayDescription": "Attributes, which refer to user metadata",
        }
    ],
}


def user(username, password, first, roles, units=None, groups=None):
    u = {
        "username": username,
        "enabled": True,
        "emailVerified": True,
        "email": f"{username}@carescore.test",
        "firstName": first,
        "lastName": "Tester",
        "credentials": [{"type": "password", "value": password, "temporary": False}],
        "realmRoles": roles,
        "requiredActions": [],
    }
    if units:
        u["attributes"] = {"units": units}
    if groups:
        u["groups"] = groups
    return u


def base_realm(name, display):
    return {
        "realm": name,
        "displayName": display,
        "enabled": True,
        "sslRequired": "none",
        "registrationAllowed": False,
        "loginWithEmailAllowed": False,
        "bruteForceProtected": False,
        "accessTokenLifespan": 300,
        "ssoSessionIdleTimeout": 1800,
        "ssoSessionMaxLifespan": 36000,
        "revokeRefreshToken": False,
        "defaultSignatureAlgorithm": "RS256",
        "components": {
            "org.keycloak.userprofile.UserProfileProvider": [
                {
                    "providerId": "declarative-user-profile",
                    "subComponents": {},
                    "config": {"kc.user.profile.config": [json.dumps(USER_PROFILE)]},
                }
            ]
        },
    }


# ---- carescore --------------------------------------------------------------------------------------
realm = base_realm("carescore", "carescore (LOCAL TEST REALM: known passwords and secrets, never deploy)")
realm["attributes"] = {
    "_comment": "A local test realm for carescore's tests and `make keycloak-up`: every "
    "password and client secret in this file is public. Never import it into a real IdP."
}
realm["roles"] = {"realm": [{"name": r, "description": d} for r, d in ROLES.items()]}
realm["groups"] = [
    {
        "name": "units",
        "path": "/units",
        "subGroups": [
            {"name": u, "path": f"/units/{u}", "attributes": {"units": [u]}}
            for u in ("ICU", "4W", "3E", "ED")
        ],
    },
]
# No clientScopes here: Keycloak then creates its built-in ones (basic carries `sub`). The carescore
# claims (aud carescore-api, roles, units) are mappers on each client that calls the API.
DEFAULT_SCOPES = ["profile", "email", "web-origins", "basic", "acr"]
PAGE = {
    "clientId": "carescore-page",
    "name": "carescore scorecard page",
    "description": "The scorecard page: authorization code + PKCE (S256), public client.",
    "enabled": True,
    "publicClient": True,
    "protocol": "openid-connect",
    "standardFlowEnabled": True,
    "implicitFlowEnabled": False,
    "directAccessGrantsEnabled": False,
    "serviceAccountsEnabled": False,
    "frontchannelLogout": True,
    # Loopback redirects match on any port (RFC 8252 7.3; Keycloak does so for 127.0.0.1 and
    # localhost), so these cover the page served on whatever port `carescore run` listens on.
    "redirectUris": ["http://127.0.0.1/*", "http://localhost/*"],
    # The page's script posts the code to the token endpoint, so its origin needs CORS. "+" (the
    # redirect URIs' origins) has no port and matches no page; the page's port is chosen per run
    # here, so this TEST realm allows any origin. A hospital's IdP lists the page's one origin.
    "webOrigins": ["*"],
    "attributes": {"pkce.code.challenge.method": "S256", "post.logout.redirect.uris": "+"},
    "defaultClientScopes": DEFAULT_SCOPES,
    "protocolMappers": scope_mappers("carescore-api"),
    "optionalClientScopes": ["offline_access"],
}
realm["clients"] = [
    PAGE,
    {
        **PAGE,
        "clientId": "carescore-page-short",
        "name": "carescore scorecard page, 4 s access tokens (TEST ONLY)",
        "description": "TEST ONLY: the page client, access tokens expire after 4 s (refresh tests).",
        "attributes": {**PAGE["attributes"], "access.token.lifespan": "4"},
    },
    {
        "clientId": "carescore-tests",
        "name": "carescore tests (TEST ONLY)",
        "description": "TEST ONLY: password grant and client credentials, public secret. Not for a real IdP.",
        "enabled": True,
        "publicClient": False,
        "clientAuthenticatorType": "client-secret",
        "secret": "carescore-tests-secret",
        "protocol": "openid-connect",
        "standardFlowEnabled": False,
        "implicitFlowEnabled": False,
        "directAccessGrantsEnabled": True,
        "serviceAccountsEnabled": True,
        "redirectUris": [],
        "webOrigins": [],
        "defaultClientScopes": DEFAULT_SCOPES,
        "protocolMappers": scope_mappers("carescore-api"),
        "optionalClientScopes": ["offline_access"],
    },
    {
        "clientId": "carescore-tests-short",
        "name": "carescore tests, 3 s access tokens (TEST ONLY)",
        "description": "TEST ONLY: like carescore-tests, with access tokens that expire after 3 s.",
        "enabled": True,
        "publicClient": False,
        "clientAuthenticatorType": "client-secret",
        "secret": "carescore-tests-secret",
        "protocol": "openid-connect",
        "standardFlowEnabled": False,
        "directAccessGrantsEnabled": True,
        "serviceAccountsEnabled": False,
        "attributes": {"access.token.lifespan": "3"},
        "defaultClientScopes": DEFAULT_SCOPES,
        "protocolMappers": scope_mappers("carescore-api"),
    },
    {
        "clientId": "other-app",
        "name": "another application (TEST ONLY)",
        "description": "TEST ONLY: tokens for another audience (aud other-api), not carescore-api.",
        "enabled": True,
        "publicClient": False,
        "clientAuthenticatorType": "client-secret",
        "secret": "other-app-secret",
        "protocol": "openid-connect",
        "standardFlowEnabled": False,
        "directAccessGrantsEnabled": True,
        "serviceAccountsEnabled": False,
        "defaultClientScopes": ["profile", "email", "basic", "acr"],
        "protocolMappers": [
            mapper(
                "audience",
                "oidc-audience-mapper",
                included_custom_audience="other-api",
                **{"access.token.claim": "true", "id.token.claim": "false"},
            )
        ],
    },
]
realm["users"] = [
    user("viewer", "viewer-pass", "Vera", ["viewer"]),
    user("clinician-icu", "clinician-pass", "Cleo", ["viewer", "clinician"], groups=["/units/ICU"]),
    user("clinician-med", "clinician-pass", "Milo", ["viewer", "clinician"], units=["4W", "3E"]),
    user("ops", "ops-pass", "Otto", ["viewer", "ops"]),
    user("admin", "admin-pass", "Ada", ["admin"]),
    {
        "username": "service-account-carescore-tests",
        "enabled": True,
        "serviceAccountClientId": "carescore-tests",
        "realmRoles": ["integration"],
        "clientRoles": {"realm-management": ["manage-realm", "view-realm"]},
    },
]
(OUT / "carescore-realm.json").write_text(json.dumps(realm, indent=2) + "\n")

# ---- elsewhere: another issuer, for "token from another realm" ----------------------------------------
other = base_realm("elsewhere", "another issuer (LOCAL TEST REALM: known passwords, never deploy)")
other["roles"] = {"realm": [{"name": r} for r in ROLES]}
other["clients"] = [
    {
        "clientId": "carescore-tests",
        "name": "TEST ONLY",
        "enabled": True,
        "publicClient": False,
        "secret": "carescore-tests-secret",
        "protocol": "openid-connect",
        "standardFlowEnabled": False,
        "directAccessGrantsEnabled": True,
        "defaultClientScopes": DEFAULT_SCOPES,
        "protocolMappers": scope_mappers("carescore-api"),
    }
]
other["users"] = [user("admin", "admin-pass", "Eve", ["admin"], units=["ICU"])]
(OUT / "elsewhere-realm.json").write_text(json.dumps(other, indent=2) + "\n")
