"""ALB OIDC sign-in: real ES256 tokens, a real key server on localhost, every way a token can be wrong."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.identity import AlbKeyCache, AuthError, identify, is_admin, verify_alb_token
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


def token(key, *, signer=ALB, kid=KID, lifetime=120, claims=None, alg="ES256") -> str:
    exp = int(time.time()) + lifetime
    payload = {"sub": "1234", "email": "ana@example.com", "name": "Ana", "exp": exp, "iss": "https://idp.example.com"}
    payload.update(claims or {})
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
    assert identify({"x-amzn-oidc-data": token(signing_key)}, alb_settings(), keys).email == "ana@example.com"
    key_server.add(f"/keys/{KID}", pem(signing_key), headers={"Content-Type": "text/plain"})


def test_dev_mode_ignores_headers_and_uses_the_dev_user(signing_key):
    settings = Settings(_env_file=None, dev_user_email="me@localhost", dev_user_is_admin=False)
    user = identify({"x-amzn-oidc-data": token(signing_key, claims={"email": "boss@example.com"})}, settings, None)
    assert (user.email, user.is_admin, user.dev_mode) == ("me@localhost", False, True)
