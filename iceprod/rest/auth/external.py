"""External token exchange: verify a token issued by an external OpenID provider (ORCID or
any OIDC issuer) and answer the identity claim it vouches for.

The signature is checked against the provider's JWKS (``ICEPROD_OIDC_JWKS_URL``, fetched and
cached by ``jwt.PyJWKClient``) or a PEM public key file (``ICEPROD_OIDC_PUBLIC_KEY_FILE``),
with asymmetric algorithms only (RS256 by default); issuer, audience and expiry are required
and checked. ``verify`` may fetch the JWKS, so it blocks: call it in a thread.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import jwt

from iceprod.common.config import ServerConfig

log = logging.getLogger(__name__)

ASYMMETRIC = ("RS", "PS", "ES", "EdDSA")
JWKS_TIMEOUT = 10.0
JWKS_LIFESPAN = 300.0
LEEWAY = 30
ORCID_PREFIXES = ("https://orcid.org/", "http://orcid.org/")


class ExternalTokenRefused(Exception):
    """The external token is not valid for us (bad signature, issuer, audience, expired,
    or without the identity claim)."""


class ProviderUnavailable(Exception):
    """The provider's keys could not be fetched or read."""


def identity_field(claim: str) -> str:
    """The user field an identity claim is matched against: ``email`` for the ``email``
    claim, ``orcid`` for any other (``orcid``, or ``sub`` in ORCID's own id tokens)."""
    return "email" if claim == "email" else "orcid"


def normalize_identity(field: str, value: str) -> str:
    """Emails compare case-insensitively; an ORCID iD may be written as its URL."""
    value = value.strip()
    if field == "email":
        return value.lower()
    for prefix in ORCID_PREFIXES:
        if value.lower().startswith(prefix):
            return value[len(prefix):]
    return value


class ExternalVerifier:
    """One per process; caches the provider's keys."""

    def __init__(self, config: ServerConfig) -> None:
        assert config.oidc_enabled
        self.issuer = config.oidc_issuer
        self.audience = config.oidc_audience
        self.claim = config.oidc_claim
        self.field = identity_field(config.oidc_claim)
        self.algorithms = [a for a in config.oidc_algorithms if a.startswith(ASYMMETRIC)]
        if not self.algorithms:
            raise ValueError("ICEPROD_OIDC_ALGORITHMS: no asymmetric algorithm given")
        self._jwks = (
            jwt.PyJWKClient(config.oidc_jwks_url, cache_jwk_set=True, lifespan=JWKS_LIFESPAN,
                            timeout=JWKS_TIMEOUT)
            if config.oidc_jwks_url else None
        )
        self._key_file = config.oidc_public_key_file
        self._key: Any = None
        self._lock = threading.Lock()

    def verify(self, token: str) -> str:
        """The normalized identity (email or ORCID iD) the token vouches for."""
        key = self._signing_key(token)
        try:
            claims = jwt.decode(
                token, key, algorithms=self.algorithms, audience=self.audience,
                issuer=self.issuer, leeway=LEEWAY,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.InvalidTokenError as e:
            raise ExternalTokenRefused(type(e).__name__) from None
        value = claims.get(self.claim)
        if not isinstance(value, str) or not value.strip():
            raise ExternalTokenRefused(f"no {self.claim} claim")
        if self.field == "email" and claims.get("email_verified") is False:
            raise ExternalTokenRefused("email not verified")
        return normalize_identity(self.field, value)

    def _signing_key(self, token: str) -> Any:
        if self._jwks is not None:
            try:
                return self._jwks.get_signing_key_from_jwt(token).key
            except jwt.PyJWKClientConnectionError as e:
                log.warning("external provider keys unavailable: %s", e)
                raise ProviderUnavailable() from None
            except (jwt.PyJWKClientError, jwt.InvalidTokenError) as e:
                raise ExternalTokenRefused(type(e).__name__) from None
        with self._lock:
            if self._key is None:
                self._key = self._load_key_file()
        return self._key

    def _load_key_file(self) -> Any:
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        assert self._key_file
        try:
            return load_pem_public_key(Path(self._key_file).read_bytes())
        except (OSError, ValueError) as e:
            log.warning("cannot read ICEPROD_OIDC_PUBLIC_KEY_FILE %s: %s", self._key_file,
                        type(e).__name__)
            raise ProviderUnavailable() from None
