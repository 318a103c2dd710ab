"""Sign-in rules stated exactly (written from mutants that survived tests/test_identity.py, docs/mutation.md):
the whole sentence a refused person reads, both expiry checks, the key URL and the group claim forms."""

from __future__ import annotations

import threading
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from support.servers import FileServer

from pipeline.admin.identity import AlbKeyCache, AuthError, identify, is_admin, verify_alb_token
from pipeline.settings import Settings

ALB = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/tagger/abc123"
KID = "5c1f4a2e-0d3b-4c5e-9b1a-2f6e8d7c9a10"
MALFORMED = "Your sign-in token is malformed. Reload the page to sign in again."
EXPIRED = "Your sign-in has expired. Reload the page to sign in again."
UNVERIFIED = "Your sign-in token could not be verified. Reload the page to sign in again."


@pytest.fixture(scope="module")
def signing_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def key_server(signing_key):
    pem = signing_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with FileServer() as server:
        server.add(f"/eu-west-3/{KID}", pem, headers={"Content-Type": "text/plain"})  # keys are per region
        yield server


@pytest.fixture
def keys(key_server):
    return AlbKeyCache(key_server.url + "/{region}/{kid}", "eu-west-3")


def make_token(key, *, header_exp=None, claims_exp=None, kid=KID, claims=None, drop=()) -> str:
    payload = {"sub": "1234", "email": "ana@example.com", "email_verified": True, "name": "Ana"}
    if claims_exp is not None:
        payload["exp"] = claims_exp
    payload.update(claims or {})
    for name in drop:
        payload.pop(name)
    headers = {"signer": ALB, "client": "client-id"}
    if kid is not None:
        headers["kid"] = kid
    if header_exp is not None:
        headers["exp"] = header_exp
    return jwt.encode(payload, key, algorithm="ES256", headers=headers)


def refusal(call) -> str:
    with pytest.raises(AuthError) as refused:
        call()
    return str(refused.value)


def test_the_key_is_fetched_from_the_configured_regions_url(signing_key, keys):
    later = int(time.time()) + 600
    assert verify_alb_token(make_token(signing_key, header_exp=later, claims_exp=later), keys=keys, expected_signer=ALB)["email"] == "ana@example.com"


def test_the_header_expiry_alone_refuses_a_token(signing_key, keys):
    now = time.time()
    past, future = int(now) - 60, int(now) + 600
    assert refusal(lambda: verify_alb_token(make_token(signing_key, header_exp=past, claims_exp=future), keys=keys, expected_signer=ALB)) == EXPIRED


def test_expiry_is_judged_at_the_callers_now_in_header_and_claims(signing_key, keys):
    exp = int(time.time()) + 600
    both = make_token(signing_key, header_exp=exp, claims_exp=exp)
    assert verify_alb_token(both, keys=keys, expected_signer=ALB, now=exp)["sub"] == "1234"  # at the second itself: valid
    assert refusal(lambda: verify_alb_token(both, keys=keys, expected_signer=ALB, now=exp + 1)) == EXPIRED
    claims_only = make_token(signing_key, claims_exp=exp)
    assert refusal(lambda: verify_alb_token(claims_only, keys=keys, expected_signer=ALB, now=exp + 1)) == EXPIRED
    header_only = make_token(signing_key, header_exp=exp)
    assert refusal(lambda: verify_alb_token(header_only, keys=keys, expected_signer=ALB, now=exp + 1)) == EXPIRED


def test_an_expired_signature_reads_as_expired(signing_key, keys):
    past = int(time.time()) - 60
    token = make_token(signing_key, claims_exp=past)
    assert refusal(lambda: verify_alb_token(token, keys=keys, expected_signer=ALB, now=past - 600)) == EXPIRED


def test_a_token_with_an_audience_claim_is_accepted(signing_key, keys):
    # The ALB's token names the OIDC client as its audience; the signer check is what ties it to us.
    later = int(time.time()) + 600
    token = make_token(signing_key, claims_exp=later, claims={"aud": "client-id", "iss": "https://idp.example.com"})
    assert verify_alb_token(token, keys=keys, expected_signer=ALB)["aud"] == "client-id"


def test_every_refusal_is_one_whole_sentence(signing_key, keys, key_server):
    later = int(time.time()) + 600
    assert refusal(lambda: verify_alb_token(make_token(signing_key, kid=None, claims_exp=later), keys=keys, expected_signer=ALB)) == MALFORMED
    assert refusal(lambda: verify_alb_token("not-a-token", keys=keys, expected_signer=ALB)) == MALFORMED
    assert refusal(lambda: keys.get("../etc/passwd")) == MALFORMED
    hs256 = jwt.encode({"email": "a@b.c"}, "a-shared-secret-of-32-bytes-long", algorithm="HS256", headers={"kid": KID, "signer": ALB})
    assert refusal(lambda: verify_alb_token(hs256, keys=keys, expected_signer=ALB)) == "Your sign-in token is not one our load balancer issues."
    assert refusal(lambda: verify_alb_token(make_token(signing_key, claims_exp=later), keys=keys, expected_signer="arn:other")) == (
        "Your sign-in token comes from a different load balancer.")
    other_key = ec.generate_private_key(ec.SECP256R1())
    assert refusal(lambda: verify_alb_token(make_token(other_key, claims_exp=later), keys=keys, expected_signer=ALB)) == UNVERIFIED
    unreachable = AlbKeyCache("http://127.0.0.1:9/{kid}", "us-east-1", timeout_s=1)
    assert refusal(lambda: unreachable.get(KID)) == "Could not check your sign-in right now (key service unreachable). Try again shortly."
    nobody = make_token(signing_key, claims_exp=later, drop=("email", "sub"))
    settings = Settings(_env_file=None, auth_mode="alb", alb_arn=ALB)
    assert refusal(lambda: identify({"x-amzn-oidc-data": nobody}, settings, keys)) == (
        "Your sign-in carries neither an email address nor a user id; ask an admin to check the identity provider.")
    assert refusal(lambda: identify({}, settings, keys)) == "You are not signed in. Open the dashboard through its normal address to sign in."
    no_arn = Settings(_env_file=None, auth_mode="alb")
    assert refusal(lambda: identify({"x-amzn-oidc-data": nobody}, no_arn, keys)) == "Sign-in is not configured (ALB_ARN is missing). Ask an admin."
    assert refusal(lambda: identify({"x-amzn-oidc-data": nobody}, settings, None)) == "Sign-in is not configured (ALB_ARN is missing). Ask an admin."


def test_a_key_service_that_never_answers_is_given_up_on_at_the_timeout(signing_key):
    held = threading.Event()
    with FileServer() as server:
        server.add(f"/{KID}", b"", hold=held)  # answers only when the test ends
        slow = AlbKeyCache(server.url + "/{kid}", "us-east-1", timeout_s=0.5)
        try:
            assert refusal(lambda: slow.get(KID)).startswith("Could not check your sign-in right now")
        finally:
            held.set()


@pytest.mark.parametrize("groups", ["staff,tagger-admins", "staff, tagger-admins", "tagger-admins", ["staff", "tagger-admins"]])
def test_admin_group_membership_in_every_claim_form(groups):
    assert is_admin(None, {"groups": groups}, admin_emails=[], admin_group="tagger-admins", group_claim="groups")


@pytest.mark.parametrize("groups", ["staff", "tagger-admins-old", "", None, ["staff"]])
def test_other_groups_do_not_make_an_admin(groups):
    assert not is_admin(None, {"groups": groups}, admin_emails=[], admin_group="tagger-admins", group_claim="groups")


def test_dev_mode_is_the_configured_developer_with_a_verified_address():
    from pipeline.admin.identity import User

    settings = Settings(_env_file=None, auth_mode="dev", dev_user_email="me@localhost", dev_user_is_admin=True)
    assert identify({}, settings, None) == User(email="me@localhost", name="Developer", is_admin=True, dev_mode=True, email_verified=True)
