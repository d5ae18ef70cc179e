"""Getting tokens: LDAP login (``POST /ldap``), sub-tokens of the caller's token
(``POST /create_token``) and the exchange of an external OpenID provider's token for ours
(``GET /token/{username}``). Passwords and tokens are never logged."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging

from iceprod.common.errors import Forbidden, Invalid, NotFound, Unauthorized, Unavailable
from iceprod.common.timeutil import iso
from iceprod.core.tokens import create_token, token_expiry
from iceprod.db.store import Doc
from iceprod.rest.auth.accounts import issue, login_user, revoke
from iceprod.rest.auth.external import ExternalTokenRefused, ProviderUnavailable, normalize_identity
from iceprod.rest.auth.ldap_login import (
    BadCredentials,
    DirectoryUnavailable,
    LdapSettings,
    authenticate,
)
from iceprod.rest.auth.subtokens import default_exp, plan
from iceprod.rest.base import APIHandler, public, requires
from iceprod.rest.handlers.schemas import body
from iceprod.rest.responses import responds

log = logging.getLogger(__name__)

BAD_LOGIN = "invalid username or password"
REFUSED = "external token refused"

LDAP_BODY = body("login_ldap")




# each type takes only the fields that mean something for it: the rule ``subtokens.plan``
# applies, stated here so that the OpenAPI document shows it
CREATE_TOKEN_BODY = body("login_create_token")


def attempted(secret: str, username: str) -> str:
    """How a failed login's username appears in the log: its length and a keyed hash.

    Not the name itself: people type their password into the username field, and the log
    would then keep it. The hash lets an operator see repeated attempts at one name; keyed
    with the server's secret so a short password cannot be recovered by hashing guesses.
    """
    raw = username.encode("utf-8", "surrogatepass")
    digest = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()[:12]
    return f"<{len(username)} chars, {digest}>"


def map_groups(group_map: dict[str, str], ldap_groups: tuple[str, ...]) -> list[str]:
    """The iceprod groups the user's directory groups map to (unmapped ones are ignored)."""
    return sorted({group_map[g] for g in ldap_groups if g in group_map})


class LdapHandler(APIHandler):
    async def prepare(self) -> None:
        # off means the route is not there, whatever the body (a client asks with `{}`)
        if not self.ctx.config.ldap_enabled:
            raise NotFound("LDAP login is not configured")
        await super().prepare()

    def parse_body(self, schema: Doc) -> Doc:
        """Like the base, but never echoes the values (the password) in the error."""
        try:
            return super().parse_body(schema)
        except Invalid as e:
            field = e.field or "body"
            raise Invalid(f"{field}: expected {{username, password}} strings",
                          field=field) from None

    @responds("Token")
    @public(body=LDAP_BODY)
    async def post(self) -> None:
        """Log in with an LDAP username and password: `{token, username, roles, groups,
        expires}`. Creates the user at first login; 401 for any bad credentials, 429 after
        repeated failures, 503 when the directory is unreachable."""
        config = self.ctx.config
        username, password = self.body["username"], self.body["password"]
        limiter = self.ctx.login_limiter
        mark = limiter.begin(username)
        try:
            identity = await asyncio.to_thread(
                authenticate, LdapSettings.from_config(config), username, password
            )
        except BadCredentials:
            log.info("LDAP login refused for username %s from %s",
                     attempted(config.secret, username), self.request.remote_ip)
            raise Unauthorized(BAD_LOGIN) from None
        except DirectoryUnavailable:
            limiter.cancel(username, mark)
            raise Unavailable("LDAP login is unavailable; try again later") from None
        limiter.succeeded(username)
        email = normalize_identity("email", identity.email) if identity.email else None
        user, lost = await login_user(self.db, identity.username, email,
                                      map_groups(config.ldap_group_map, identity.groups))
        if lost:
            await revoke(self.db, self.ctx.resolver, [user["username"]])
        log.info("LDAP login: %s", user["username"])
        self.write_json(issue(config, user))


class CreateTokenHandler(APIHandler):
    @responds("Token")
    @requires("token", body=CREATE_TOKEN_BODY)
    async def post(self) -> None:
        """Mint a sub-token of the caller's token: never longer-lived and never with more
        rights (`temp`/`user`: the caller; `share`: read one dataset; `pilot`: admin or
        system; `system`: admin)."""
        parent = self.principal
        grant = plan(parent, self.body)
        if self.body["type"] == "share":
            await self.authorize_dataset(self.body["dataset_id"], "read")
        cfg = self.ctx.config
        exp = self.body.get("exp") or default_exp(self.body["type"], cfg.token_exp,
                                                  cfg.pilot_token_seconds)
        token = create_token(
            self.ctx.config.secret, grant.username, grant.roles, grant.groups, exp,
            grant.scope, grant.pilot_id, custom_roles=grant.custom_roles, not_after=parent.exp,
        )
        self.write_json({
            "token": token, "username": grant.username, "roles": list(grant.roles),
            "groups": list(grant.groups), "scope": grant.scope, "pilot_id": grant.pilot_id,
            "expires": iso(token_expiry(token)),
        })


class TokenExchangeHandler(APIHandler):
    async def prepare(self) -> None:
        """The bearer token here is the external provider's, not ours: not decoded here."""
        self.check_request()

    @responds("Token")
    @public()
    async def get(self, username: str) -> None:
        """Exchange an external OpenID provider's token (`Authorization: Bearer ...`) for
        ours, for the user whose stored email or ORCID iD matches the token's claim; 403
        otherwise."""
        verifier = self.ctx.external
        if verifier is None:
            raise NotFound("token exchange is not configured")
        external = self.bearer_token()
        if not external:
            raise Unauthorized("Authorization: expected 'Bearer <external token>'")
        try:
            identity = await asyncio.to_thread(verifier.verify, external)
        except ExternalTokenRefused as e:
            log.info("external token refused for %s: %s",
                     attempted(self.ctx.config.secret, username), e)
            raise Forbidden(REFUSED) from None
        except ProviderUnavailable:
            raise Unavailable("the external token provider is unavailable") from None
        user = await self.db.users.by_username(username)
        stored = user.get(verifier.field) if user else None
        if user is None or not stored or normalize_identity(verifier.field, stored) != identity:
            log.info("external token for %s does not match the user",
                     attempted(self.ctx.config.secret, username))
            raise Forbidden(REFUSED)
        self.write_json(issue(self.ctx.config, user))


routes = [
    (r"/ldap", LdapHandler),
    (r"/create_token", CreateTokenHandler),
    (r"/token/(?P<username>[^/]+)", TokenExchangeHandler),
]
