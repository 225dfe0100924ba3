"""Bearer-secret check for the job targets.

The comparison runs on bytes in constant time against every configured secret,
so the time taken says nothing about which secret, or how much of one, matched.
"""

from __future__ import annotations

import hmac

from housekeeper.config import Settings
from housekeeper.errors import ConfigurationError, UnauthorizedError

# Compared against when the header carries no usable token, so that a missing
# token costs the same work as a wrong one.
_PLACEHOLDER = b"\x00" * 32


def _token_from_header(header: str | None) -> bytes | None:
    """Return the token of `Bearer <token>`, or None when the header is unusable.

    The scheme is case-insensitive (RFC 7235 section 2.1) and exactly one token
    must follow it, separated by a single space.
    """
    if not header:
        return None
    scheme, separator, token = header.partition(" ")
    if not separator or scheme.lower() != "bearer":
        return None
    if not token or any(char.isspace() for char in token):
        return None
    # WSGI hands header values over decoded as latin-1 (PEP 3333), so
    # encoding them back gives the bytes the client sent: a UTF-8 secret sent
    # as UTF-8 matches. compare_digest refuses non-ASCII str (a 500), so bytes
    # it is; characters beyond latin-1 cannot come from the wire.
    try:
        return token.encode("latin-1")
    except UnicodeEncodeError:
        return token.encode("utf-8", "surrogateescape")


def require_bearer(header: str | None, settings: Settings) -> None:
    """Raise unless `header` carries the current or the previous secret.

    No secret configured (unset or empty) refuses every request with a 500:
    a function that cannot authenticate must not run.
    """
    secrets = [s for s in (settings.cron_secret, settings.cron_secret_previous) if s]
    if not settings.cron_secret:
        raise ConfigurationError(
            "CRON_SECRET is not configured; every request is refused"
        )

    token = _token_from_header(header)
    candidate = token if token is not None else _PLACEHOLDER
    matched = False
    for secret in secrets:
        # Evaluate every comparison: stopping at the first match would reveal
        # whether the current or the previous secret was used.
        matched |= hmac.compare_digest(candidate, secret.encode("utf-8"))

    if token is None:
        raise UnauthorizedError(
            "missing or malformed Authorization header; expected 'Bearer <secret>'"
        )
    if not matched:
        raise UnauthorizedError("invalid bearer token")
