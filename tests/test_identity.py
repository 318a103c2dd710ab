"""ALB OIDC sign-in: real ES256 tokens, a real key server on localhost, every way a token can be wrong."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.admin.identity import AlbKeyCache, AuthError, claim_is_true, identify, is_admin, verified_email, verify_alb_token
from pipeline.settings import Settings
from support.servers import FileServer

ALB = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/tagger/abc123"
OTHER_ALB = "arn:aws:elasticloadbalancing:us-east-1:999999999999:loadbalancer/app/evil/def456"
KID = "5c1f4a2e-0d3b-4c5e-9b1a-2f6e8d7c9a10"


def new_key():
    return ec.generate_private_key(ec.SECP256R1())


def pem(private_key) -> bytes:
    return private_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def signing_key():
    return new_key()


@pytest.fixture(scope="module")
def key_server(signing_key):
    with FileServer() as server:
        server.add(f"/keys/{KID}", pem(signing_key), headers={"Content-Type": "text/plain"})
        yield server


@pytest.fixture
def keys(key_server):
    return AlbKeyCache(key_server.url + "/keys/{kid}", "us-east-1")


def token(key, *, signer=ALB, kid=KID, lifetime=120, claims=None, alg="ES256", drop=()) -> str:
    exp = int(time.time()) + lifetime
    payload = {"sub": "1234", "email": "ana@example.com", "email_verified": "true", "name": "Ana", "exp": exp, "iss": "https://idp.example.com"}
    payload.update(claims or {})
    for name in drop:
        payload.pop(name, None)
    headers = {"kid": kid, "signer": signer, "client": "client-id", "exp": exp, "iss": "https://idp.example.com"}
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


def alb_settings(**overrides) -> Settings:
    values = dict(auth_mode="alb", alb_arn=ALB, admin_emails=["boss@example.com"], admin_group="tagger-admins")
    values.update(overrides)
    return Settings(_env_file=None, **values)


def test_a_valid_alb_token_gives_the_user(signing_key, keys):
    user = identify({"X-Amzn-Oidc-Data": token(signing_key)}, alb_settings(), keys)
    assert (user.email, user.name, user.is_admin, user.dev_mode) == ("ana@example.com", "Ana", False, False)


def test_admins_by_email_or_group(signing_key, keys):
    by_email = identify({"x-amzn-oidc-data": token(signing_key, claims={"email": "Boss@Example.com"})}, alb_settings(), keys)
    by_group = identify({"x-amzn-oidc-data": token(signing_key, claims={"groups": ["staff", "tagger-admins"]})}, alb_settings(), keys)
    assert by_email.is_admin and by_group.is_admin
    assert is_admin("x@example.com", {"cognito:groups": "staff tagger-admins"}, admin_emails=[], admin_group="tagger-admins", group_claim="cognito:groups")
    assert not is_admin("x@example.com", {"groups": ["staff"]}, admin_emails=[], admin_group="tagger-admins", group_claim="groups")


@pytest.mark.parametrize("make, message", [
    (lambda key: token(key, signer=OTHER_ALB), "different load balancer"),
    (lambda key: token(key, lifetime=-10), "expired"),
    (lambda key: token(new_key()), "could not be verified"),  # signed by someone else's key
    (lambda key: token(key, kid="../../etc/passwd"), "malformed"),
    (lambda key: jwt.encode({"email": "a@b.c"}, "a-shared-secret-of-32-bytes-long", algorithm="HS256", headers={"kid": KID, "signer": ALB}), "not one our load balancer issues"),
    (lambda key: "not-a-token", "malformed"),
])
def test_bad_tokens_are_refused_with_a_plain_reason(signing_key, keys, make, message):
    with pytest.raises(AuthError, match=message):
        identify({"x-amzn-oidc-data": make(signing_key)}, alb_settings(), keys)


def test_tampered_claims_fail_verification(signing_key, keys):
    header, payload, signature = token(signing_key).split(".")
    forged_payload = jwt.utils.base64url_encode(b'{"email":"boss@example.com","exp":9999999999}').decode()
    with pytest.raises(AuthError, match="could not be verified"):
        verify_alb_token(f"{header}.{forged_payload}.{signature}", keys=keys, expected_signer=ALB)


def test_alb_mode_without_a_token_is_not_signed_in(keys):
    with pytest.raises(AuthError, match="not signed in"):
        identify({}, alb_settings(), keys)


def test_unreachable_key_service_is_a_clear_error(signing_key):
    unreachable = AlbKeyCache("http://127.0.0.1:9/{kid}", "us-east-1", timeout_s=1)
    with pytest.raises(AuthError, match="key service unreachable"):
        identify({"x-amzn-oidc-data": token(signing_key)}, alb_settings(), unreachable)


def test_keys_are_fetched_once_per_kid(signing_key, key_server, keys):
    for _ in range(3):
        identify({"x-amzn-oidc-data": token(signing_key)}, alb_settings(), keys)
    key_server.routes.clear()  # the server forgets the key; the cache still has it
    try:
        assert identify({"x-amzn-oidc-data": token(signing_key)}, alb_settings(), keys).email == "ana@example.com"
    finally:  # later tests need the key again, whatever happened here
        key_server.add(f"/keys/{KID}", pem(signing_key), headers={"Content-Type": "text/plain"})


def test_dev_mode_ignores_headers_and_uses_the_dev_user(signing_key):
    settings = Settings(_env_file=None, dev_user_email="me@localhost", dev_user_is_admin=False)
    user = identify({"x-amzn-oidc-data": token(signing_key, claims={"email": "boss@example.com"})}, settings, None)
    assert (user.email, user.is_admin, user.dev_mode) == ("me@localhost", False, True)


# Verified email only ------------------------------------------------------------------------------
def sign_in(signing_key, keys, *, claims=None, drop=(), **settings):
    return identify({"x-amzn-oidc-data": token(signing_key, claims=claims, drop=drop)}, alb_settings(**settings), keys)


@pytest.mark.parametrize("verified", [True, "true", "TRUE", " true "])
def test_an_admin_email_counts_when_verified_as_bool_or_string(signing_key, keys, verified):
    user = sign_in(signing_key, keys, claims={"email": "Boss@Example.com", "email_verified": verified})
    assert user.is_admin and user.email_verified and user.email == "Boss@Example.com"


@pytest.mark.parametrize("verified", [False, "false", "False", "", "yes", 1, None, "missing"])
def test_an_unverified_admin_email_is_not_an_admin(signing_key, keys, verified):
    drop = ("email_verified",) if verified == "missing" else ()
    claims = {"email": "boss@example.com"} if drop else {"email": "boss@example.com", "email_verified": verified}
    user = sign_in(signing_key, keys, claims=claims, drop=drop)
    assert not user.is_admin and not user.email_verified
    assert user.email == "boss@example.com (unverified)"  # never recorded as the admin's own address
    assert user.name == "Ana"


def test_without_an_email_the_user_is_a_non_admin_identified_by_sub(signing_key, keys):
    user = sign_in(signing_key, keys, claims={"sub": "0b6c2f1e-aaaa"}, drop=("email", "email_verified", "name"))
    assert (user.email, user.name, user.is_admin, user.email_verified) == ("sub:0b6c2f1e-aaaa", "sub:0b6c2f1e-aaaa", False, False)


def test_a_sub_shaped_like_an_admin_email_is_not_an_admin(signing_key, keys):
    # The old fallback used `sub` as the email and matched it against ADMIN_EMAILS.
    user = sign_in(signing_key, keys, claims={"sub": "boss@example.com", "email_verified": "true"}, drop=("email",))
    assert not user.is_admin and user.email == "sub:boss@example.com"
    empty = sign_in(signing_key, keys, claims={"sub": "boss@example.com", "email": "", "email_verified": True})
    assert not empty.is_admin and empty.email == "sub:boss@example.com"


def test_group_membership_still_makes_an_admin_without_a_verified_email(signing_key, keys):
    user = sign_in(signing_key, keys, claims={"groups": ["tagger-admins"]}, drop=("email", "email_verified"))
    assert user.is_admin and user.email == "sub:1234"


def test_neither_email_nor_sub_is_refused(signing_key, keys):
    with pytest.raises(AuthError, match="neither an email address nor a user id"):
        sign_in(signing_key, keys, drop=("email", "email_verified", "sub"))


def test_is_admin_itself_requires_the_tokens_verified_email():
    admins = {"admin_emails": ["boss@example.com"], "admin_group": None, "group_claim": "groups"}
    assert is_admin("boss@example.com", {"email": "boss@example.com", "email_verified": True}, **admins)
    assert not is_admin("boss@example.com", {"email": "boss@example.com", "email_verified": "false"}, **admins)
    assert not is_admin("boss@example.com", {"email": "ana@example.com", "email_verified": True}, **admins)  # not the token's email
    assert not is_admin("boss@example.com", {"sub": "boss@example.com"}, **admins)
    assert not is_admin(None, {"email": "boss@example.com", "email_verified": True}, **admins)
    assert verified_email({"email": " a@b.c ", "email_verified": "true"}) == "a@b.c"
    assert [claim_is_true(v) for v in (True, "true", "false", 1, "1", None)] == [True, True, False, False, False, False]
