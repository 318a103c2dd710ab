"""Who is using the dashboard, and are they an admin.

Behind the AWS load balancer (AUTH_MODE=alb) the ALB authenticates people with OIDC and passes
`x-amzn-oidc-data`: a JWT it signs with ES256. We verify it with the region's public key for its
`kid`, check the expiry and that the signer is *our* load balancer (so a token minted by another ALB
is refused), then read the email and groups. Locally (AUTH_MODE=dev) there is one dev user and
headers are ignored, because without the ALB anyone could send them.

Whose email counts: only a *verified* one — the token's `email` claim with `email_verified` true
(a JSON `true`, or the string "true" as Cognito and some OIDC providers send it; anything else,
missing included, is unverified). `User.email` is the label recorded as "who" on edits, batches and
the audit log:

- verified email → the email itself; it may make the user an admin through ADMIN_EMAILS;
- unverified email → "<email> (unverified)": the person can use the app, but is never an admin by
  email (anyone can type someone else's address into an identity provider that does not verify);
- no email at all → "sub:<sub>" (the provider's stable subject id): the person can use the app as
  a non-admin; a `sub` that looks like an admin's email does not count;
- neither email nor sub → refused.

Membership of ADMIN_GROUP (the signed groups claim) makes an admin whatever the email.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from pipeline.errors import UserFacingError

OIDC_DATA_HEADER = "x-amzn-oidc-data"
KID_PATTERN = re.compile(r"^[A-Za-z0-9-]{1,128}$")  # the kid goes into a URL: nothing else allowed


class AuthError(UserFacingError):
    """Not signed in, or the sign-in could not be verified."""


@dataclass(frozen=True)
class User:
    email: str  # the "who" label: verified email, "<email> (unverified)" or "sub:<sub>" (module docstring)
    name: str
    is_admin: bool
    dev_mode: bool = False
    email_verified: bool = False


class AlbKeyCache:
    """ALB public keys (PEM) by kid; fetched once each. Keys are public, so caching them is safe."""

    def __init__(self, url_template: str, region: str, timeout_s: float = 5.0) -> None:
        self.url_template, self.region, self.timeout_s = url_template, region, timeout_s
        self._keys: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, kid: str) -> str:
        if not KID_PATTERN.match(kid):
            raise AuthError("Your sign-in token is malformed. Reload the page to sign in again.")
        with self._lock:
            if kid not in self._keys:
                url = self.url_template.format(region=self.region, kid=kid)
                try:
                    with urllib.request.urlopen(url, timeout=self.timeout_s) as response:  # fixed AWS host, kid checked
                        self._keys[kid] = response.read(16_384).decode("ascii")
                except OSError as error:
                    raise AuthError("Could not check your sign-in right now (key service unreachable). Try again shortly.") from error
            return self._keys[kid]


def verify_alb_token(token: str, *, keys: AlbKeyCache, expected_signer: str, now: float | None = None) -> dict[str, Any]:
    """The verified claims of an ALB `x-amzn-oidc-data` token, or AuthError."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as error:
        raise AuthError("Your sign-in token is malformed. Reload the page to sign in again.") from error
    if header.get("alg") != "ES256":
        raise AuthError("Your sign-in token is not one our load balancer issues.")
    if header.get("signer") != expected_signer:
        raise AuthError("Your sign-in token comes from a different load balancer.")
    now = time.time() if now is None else now
    if "exp" in header and float(header["exp"]) < now:  # ALB puts exp in the header
        raise AuthError("Your sign-in has expired. Reload the page to sign in again.")
    key = keys.get(str(header.get("kid", "")))
    try:
        claims = jwt.decode(token, key, algorithms=["ES256"], options={"verify_aud": False, "verify_iss": False}, leeway=0)
    except jwt.ExpiredSignatureError as error:
        raise AuthError("Your sign-in has expired. Reload the page to sign in again.") from error
    except jwt.PyJWTError as error:
        raise AuthError("Your sign-in token could not be verified. Reload the page to sign in again.") from error
    if "exp" in claims and float(claims["exp"]) < now:
        raise AuthError("Your sign-in has expired. Reload the page to sign in again.")
    return claims


def claim_is_true(value: Any) -> bool:
    """An OIDC boolean claim: JSON true, or the string "true" (Cognito sends strings)."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def verified_email(claims: Mapping[str, Any]) -> str | None:
    """The token's email when the identity provider says it is verified, else None."""
    email = claims.get("email")
    if isinstance(email, str) and email.strip() and claim_is_true(claims.get("email_verified")):
        return email.strip()
    return None


def is_admin(email: str | None, claims: Mapping[str, Any], *, admin_emails: list[str], admin_group: str | None, group_claim: str) -> bool:
    """Admin by ADMIN_GROUP membership, or by ADMIN_EMAILS — the latter only when `email` is the
    token's own *verified* email (an unverified email or a `sub` never makes an admin)."""
    verified = verified_email(claims)
    if email and verified and email.strip().lower() == verified.lower() and verified.lower() in {e.strip().lower() for e in admin_emails}:
        return True
    if not admin_group:
        return False
    groups = claims.get(group_claim) or []
    if isinstance(groups, str):
        groups = [g.strip() for g in groups.replace(",", " ").split()]
    return admin_group in groups


def identify(headers: Mapping[str, str], settings, keys: AlbKeyCache | None) -> User:
    """The current user from request headers (ALB mode) or the configured dev user."""
    if settings.auth_mode == "dev":
        return User(email=settings.dev_user_email, name="Developer", is_admin=settings.dev_user_is_admin, dev_mode=True, email_verified=True)
    token = next((value for name, value in headers.items() if name.lower() == OIDC_DATA_HEADER), None)
    if not token:
        raise AuthError("You are not signed in. Open the dashboard through its normal address to sign in.")
    if not settings.alb_arn or keys is None:
        raise AuthError("Sign-in is not configured (ALB_ARN is missing). Ask an admin.")
    claims = verify_alb_token(token, keys=keys, expected_signer=settings.alb_arn)
    label = user_label(claims)
    admin = is_admin(verified_email(claims), claims, admin_emails=settings.admin_emails, admin_group=settings.admin_group, group_claim=settings.group_claim)
    return User(email=label, name=str(claims.get("name") or label), is_admin=admin, email_verified=verified_email(claims) is not None)


def user_label(claims: Mapping[str, Any]) -> str:
    """What `User.email` holds (see the module docstring): verified email, "<email> (unverified)" or "sub:<sub>"."""
    verified = verified_email(claims)
    if verified:
        return verified
    email = claims.get("email")
    if isinstance(email, str) and email.strip():
        return f"{email.strip()} (unverified)"
    subject = claims.get("sub")
    if isinstance(subject, str) and subject.strip():
        return f"sub:{subject.strip()}"
    raise AuthError("Your sign-in carries neither an email address nor a user id; ask an admin to check the identity provider.")
