"""JWT verification through AuthzService.check(): a real IdP on loopback serves discovery and
the JWKS; every rejection is a 401 with WWW-Authenticate and a precise logged reason code."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import ValidationError

from sidegate.extauthz.errors import AuthzConfigError
from sidegate.extauthz.factory import build_authenticator
from sidegate.extauthz.identity.jwt import JwtVerifier
from sidegate.extauthz.identity.jwt_settings import JwtSourceSettings
from sidegate.extauthz.service import AuthzService
from tests.identity.conftest import FakeClock, IdP, SigningKey, check_request, new_key
from tests.identity.jwt_helpers import (
    authz_settings,
    b64url,
    denied_header,
    hand_signed_hs256,
    metadata,
    start_service,
    status_of,
    unsigned,
    upstream_headers,
)

ASYMMETRIC = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"]


def identity_config(*issuers: dict[str, Any], **source: Any) -> dict[str, Any]:
    return {
        "sources": [{"name": "idp", "type": "jwt", "issuers": list(issuers), **source}],
        "upstream_headers": {
            "x-user-id": "subject",
            "x-user-roles": "roles",
            "x-consumer-tier": "tier",
        },
    }


def discovery_issuer(idp: IdP, **extra: Any) -> dict[str, Any]:
    return {
        "issuer": idp.issuer,
        "discovery": True,
        "algorithms": [*ASYMMETRIC, "EdDSA"],
        "audiences": ["api"],
        **extra,
    }


@pytest.fixture
async def service(idp: IdP, idp_b: IdP) -> AsyncIterator[AuthzService]:
    svc = await start_service(identity_config(discovery_issuer(idp), discovery_issuer(idp_b)))
    try:
        yield svc
    finally:
        await svc.close()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def check_token(service: AuthzService, token: str, path: str = "/hello") -> Any:
    return await service.check(check_request(path, headers=bearer(token)))


async def rejected_code(service: AuthzService, token: str) -> str:
    """Checks the token is a 401 with a Bearer challenge; returns the logged reason code."""
    with structlog.testing.capture_logs() as logs:
        response = await check_token(service, token)
    assert status_of(response) == 401, response
    challenge = denied_header(response, "www-authenticate")
    assert challenge is not None and challenge.startswith('Bearer realm="sidegate"')
    assert 'error="invalid_token"' in challenge
    assert token not in str(logs)
    codes = [e["code"] for e in logs if e["event"] == "identity_rejected"]
    assert len(codes) == 1, logs
    return codes[0]


@pytest.mark.parametrize("alg", [*ASYMMETRIC, "EdDSA", "Ed448"])
async def test_valid_token_for_each_algorithm_family(idp: IdP, alg: str) -> None:
    key = new_key(alg)
    idp.keys = [key]
    svc = await start_service(identity_config(discovery_issuer(idp)))
    try:
        response = await check_token(svc, key.sign(idp.claims(tier="premium")))
    finally:
        await svc.close()
    assert status_of(response) == 200
    headers = upstream_headers(response)
    assert headers["x-user-id"] == ("user-1", False)
    assert headers["x-consumer-tier"] == ("premium", False)
    assert metadata(response)["tier"] == "premium"
    assert metadata(response)["consumer"] == "user-1"


async def test_expired_token(service: AuthzService, idp: IdP, rsa_key: SigningKey) -> None:
    now = int(time.time())
    token = rsa_key.sign(idp.claims(iat=now - 600, exp=now - 120))
    assert await rejected_code(service, token) == "expired"
    response = await check_token(service, token)
    assert 'error_description="token expired"' in denied_header(response, "www-authenticate")


async def test_expiry_within_leeway_is_accepted(
    service: AuthzService, idp: IdP, rsa_key: SigningKey
) -> None:
    now = int(time.time())
    token = rsa_key.sign(idp.claims(iat=now - 600, exp=now - 5))
    assert status_of(await check_token(service, token)) == 200


async def test_not_yet_valid_token(service: AuthzService, idp: IdP, rsa_key: SigningKey) -> None:
    now = int(time.time())
    token = rsa_key.sign(idp.claims(nbf=now + 600, exp=now + 900))
    assert await rejected_code(service, token) == "not_yet_valid"


async def test_issued_in_the_future(service: AuthzService, idp: IdP, rsa_key: SigningKey) -> None:
    now = int(time.time())
    token = rsa_key.sign(idp.claims(iat=now + 600, exp=now + 900))
    assert await rejected_code(service, token) == "not_yet_valid"


async def test_missing_exp(service: AuthzService, idp: IdP, rsa_key: SigningKey) -> None:
    claims = idp.claims()
    del claims["exp"]
    assert await rejected_code(service, rsa_key.sign(claims)) == "missing_claim"


async def test_non_numeric_exp(service: AuthzService, idp: IdP, rsa_key: SigningKey) -> None:
    token = rsa_key.sign(idp.claims(exp="tomorrow"))
    assert await rejected_code(service, token) == "invalid_claim"


async def test_wrong_issuer(service: AuthzService, idp: IdP, rsa_key: SigningKey) -> None:
    token = rsa_key.sign(idp.claims(iss="https://evil.example.com"))
    assert await rejected_code(service, token) == "unknown_issuer"


async def test_issuer_prefix_is_not_a_match(
    service: AuthzService, idp: IdP, rsa_key: SigningKey
) -> None:
    # CVE-2024-53861 class: a substring/prefix of a trusted issuer is a different issuer
    token = rsa_key.sign(idp.claims(iss=idp.issuer[:-1]))
    assert await rejected_code(service, token) == "unknown_issuer"


@pytest.mark.parametrize("aud", ["other", ["other", "another"]], ids=["string", "array"])
async def test_wrong_audience(
    service: AuthzService, idp: IdP, rsa_key: SigningKey, aud: Any
) -> None:
    token = rsa_key.sign(idp.claims(aud=aud))
    assert await rejected_code(service, token) == "wrong_audience"


async def test_missing_audience_when_audiences_configured(
    service: AuthzService, idp: IdP, rsa_key: SigningKey
) -> None:
    token = rsa_key.sign(idp.claims(aud=None))
    assert await rejected_code(service, token) == "wrong_audience"


async def test_audience_array_intersection_accepted(
    service: AuthzService, idp: IdP, rsa_key: SigningKey
) -> None:
    token = rsa_key.sign(idp.claims(aud=["other", "api"]))
    assert status_of(await check_token(service, token)) == 200


async def test_alg_none(service: AuthzService, idp: IdP, rsa_key: SigningKey) -> None:
    token = unsigned({"alg": "none", "kid": rsa_key.kid}, idp.claims())
    assert await rejected_code(service, token) == "alg_not_allowed"


async def test_hs256_signed_with_the_rsa_public_key(
    service: AuthzService, idp: IdP, rsa_key: SigningKey
) -> None:
    pem = rsa_key.private.public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
    )
    token = hand_signed_hs256({"alg": "HS256", "kid": rsa_key.kid}, idp.claims(), pem)
    assert await rejected_code(service, token) == "alg_not_allowed"


async def test_hs256_key_confusion_even_when_hs256_is_allowed(
    idp: IdP, rsa_key: SigningKey
) -> None:
    """An issuer configured for HMAC has only its secret: the RSA public key is not a key."""
    secret = "s" * 40
    pem = rsa_key.private.public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
    )
    svc = await start_service(
        identity_config(
            {"issuer": idp.issuer, "algorithms": ["HS256"], "keys": [{"secret": secret}]}
        )
    )
    try:
        forged = hand_signed_hs256({"alg": "HS256"}, idp.claims(aud=None), pem)
        assert await rejected_code(svc, forged) == "bad_signature"
        good = hand_signed_hs256({"alg": "HS256"}, idp.claims(aud=None), secret.encode())
        assert status_of(await check_token(svc, good)) == 200
    finally:
        await svc.close()


async def test_unknown_kid(service: AuthzService, idp: IdP, rsa_key: SigningKey) -> None:
    stranger = new_key("RS256", "not-published")
    token = stranger.sign(idp.claims())
    assert await rejected_code(service, token) == "unknown_kid"


async def test_known_kid_wrong_key(service: AuthzService, idp: IdP, rsa_key: SigningKey) -> None:
    stranger = new_key("RS256", rsa_key.kid)
    assert await rejected_code(service, stranger.sign(idp.claims())) == "bad_signature"


async def test_tampered_payload(service: AuthzService, idp: IdP, rsa_key: SigningKey) -> None:
    header, _, signature = rsa_key.sign(idp.claims()).split(".")
    forged_claims = b64url(json.dumps(idp.claims(sub="admin", roles=["admin"])).encode())
    token = f"{header}.{forged_claims}.{signature}"
    assert await rejected_code(service, token) == "bad_signature"


async def test_oversized_token(service: AuthzService, idp: IdP, rsa_key: SigningKey) -> None:
    token = rsa_key.sign(idp.claims(padding="x" * 10_000))
    assert await rejected_code(service, token) == "too_large"


async def test_oversized_header(service: AuthzService, idp: IdP, rsa_key: SigningKey) -> None:
    token = rsa_key.sign(idp.claims(), headers={"x-pad": "y" * 2000})
    assert await rejected_code(service, token) == "too_large"


@pytest.mark.parametrize(
    "token",
    ["garbage", "a.b.c", "!!!.@@@.###", "eyJhbGciOiJSUzI1NiJ9.%%%.abc", "a.b.c.d.e", "...."],
)
async def test_garbage(service: AuthzService, token: str) -> None:
    assert await rejected_code(service, token) == "malformed"


async def test_header_not_an_object(service: AuthzService, idp: IdP) -> None:
    token = b64url(b"[1,2]") + "." + b64url(json.dumps(idp.claims()).encode()) + ".sig"
    assert await rejected_code(service, token) == "malformed"


async def test_issuer_b_key_claiming_issuer_a(
    service: AuthzService, idp: IdP, idp_b: IdP, other_rsa_key: SigningKey
) -> None:
    """Both issuers are trusted, but each only with its own keys."""
    assert status_of(await check_token(service, other_rsa_key.sign(idp_b.claims()))) == 200
    forged = other_rsa_key.sign(idp.claims())
    assert await rejected_code(service, forged) == "unknown_kid"


async def test_issuer_b_key_claiming_issuer_a_with_a_kid(
    service: AuthzService, idp: IdP, rsa_key: SigningKey, other_rsa_key: SigningKey
) -> None:
    forged = other_rsa_key.sign(idp.claims(), kid=rsa_key.kid)
    assert await rejected_code(service, forged) == "bad_signature"


async def test_unknown_crit_rejected(service: AuthzService, idp: IdP, rsa_key: SigningKey) -> None:
    token = rsa_key.sign(idp.claims(), headers={"crit": ["exp-ext"], "exp-ext": 1})
    assert await rejected_code(service, token) == "crit_unsupported"


async def test_embedded_jwk_header_ignored(service: AuthzService, idp: IdP) -> None:
    """A token carrying its own key (jwk/jku/x5u headers) gains nothing from it."""
    attacker = new_key("RS256", "attacker")
    token = attacker.sign(
        idp.claims(),
        headers={"jwk": attacker.jwk(), "jku": f"{idp.issuer}/attacker", "x5u": "http://x"},
    )
    assert await rejected_code(service, token) == "unknown_kid"
    token = attacker.sign(idp.claims(), headers={"jwk": attacker.jwk()}, kid=False)
    assert await rejected_code(service, token) in {"bad_signature", "unknown_kid"}


async def test_token_without_kid_checks_the_issuer_keys(
    service: AuthzService, idp: IdP, rsa_key: SigningKey
) -> None:
    token = rsa_key.sign(idp.claims(), kid=False)
    assert status_of(await check_token(service, token)) == 200


async def test_typ_required(idp: IdP, rsa_key: SigningKey) -> None:
    svc = await start_service(identity_config(discovery_issuer(idp, typ="at+jwt")))
    try:
        assert await rejected_code(svc, rsa_key.sign(idp.claims())) == "bad_typ"
        good = rsa_key.sign(idp.claims(), headers={"typ": "application/at+JWT"})
        assert status_of(await check_token(svc, good)) == 200
    finally:
        await svc.close()


async def test_max_lifetime_and_required_claims(idp: IdP, rsa_key: SigningKey) -> None:
    issuer = discovery_issuer(idp, max_lifetime_seconds=3600, required_claims=["jti"])
    svc = await start_service(identity_config(issuer))
    now = int(time.time())
    try:
        long_lived = rsa_key.sign(idp.claims(jti="1", iat=now, exp=now + 7200))
        assert await rejected_code(svc, long_lived) == "lifetime_too_long"
        no_jti = rsa_key.sign(idp.claims())
        assert await rejected_code(svc, no_jti) == "missing_claim"
        good = rsa_key.sign(idp.claims(jti="1"))
        assert status_of(await check_token(svc, good)) == 200
    finally:
        await svc.close()


async def test_claim_mapping(service: AuthzService, idp: IdP, rsa_key: SigningKey) -> None:
    token = rsa_key.sign(
        idp.claims(azp="client-7", scope="read write", roles=["admin", "dev"], tier="premium")
    )
    response = await check_token(service, token, path="/admin/panel")
    # the shipped policy lets /admin through only for the admin role: identity reached it
    assert status_of(response) == 200
    assert upstream_headers(response)["x-user-roles"] == ("admin,dev", False)
    assert metadata(response)["consumer"] == "client-7"


async def test_scp_array_and_nested_roles(idp: IdP, rsa_key: SigningKey) -> None:
    source = JwtSourceSettings.model_validate(
        {
            "name": "idp",
            "type": "jwt",
            "issuers": [
                {
                    "issuer": idp.issuer,
                    "jwks_uri": idp.jwks_uri,
                    "claims": {"roles": ["realm_access.roles"], "tier": ["plan"]},
                }
            ],
        }
    )
    verifier = JwtVerifier(source)
    try:
        token = rsa_key.sign(idp.claims(scp=["a", "b"], realm_access={"roles": ["ops"]}))
        identity = await verifier.verify(token, None)  # type: ignore[arg-type]
    finally:
        await verifier.close()
    assert identity.scopes == ("a", "b")
    assert identity.roles == ("ops",)
    assert identity.tier == "default"
    assert identity.method == "jwt"
    assert identity.claims["sub"] == "user-1"


async def test_admin_without_role_is_403_not_401(
    service: AuthzService, idp: IdP, rsa_key: SigningKey
) -> None:
    response = await check_token(service, rsa_key.sign(idp.claims()), path="/admin")
    assert status_of(response) == 403


async def test_static_pem_and_jwk_keys(tmp_path: Any, idp: IdP) -> None:
    pem_key = new_key("ES256", "pem-key")
    jwk_key = new_key("EdDSA", "jwk-key")
    pem = pem_key.private.public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "pem-key.pem").write_bytes(pem)
    issuer = {
        "issuer": "https://static.example.com",
        "algorithms": ["ES256", "EdDSA"],
        "keys": [
            {"kid": "pem-key", "pem_file": str(tmp_path / "pem-key.pem")},
            {"jwk": jwk_key.jwk()},
        ],
    }
    svc = await start_service(identity_config(issuer))
    claims = idp.claims(iss="https://static.example.com", aud=None)
    try:
        for key in (pem_key, jwk_key):
            assert status_of(await check_token(svc, key.sign(claims))) == 200
        # a key of the issuer used under another kid's name fails
        forged = jwk_key.sign(claims, kid="pem-key", alg="EdDSA")
        assert await rejected_code(svc, forged) in {"unknown_kid", "bad_signature"}
    finally:
        await svc.close()


@pytest.mark.parametrize(
    "issuer",
    [
        # HMAC mixed with asymmetric algorithms for one issuer
        {"issuer": "i", "algorithms": ["HS256", "RS256"], "keys": [{"secret": "s" * 40}]},
        # HMAC algorithms with a JWKS
        {"issuer": "i", "algorithms": ["HS256"], "jwks_uri": "https://x/jwks"},
        # a secret with asymmetric algorithms
        {"issuer": "i", "algorithms": ["RS256"], "keys": [{"secret": "s" * 40}]},
        # a symmetric JWK
        {"issuer": "i", "algorithms": ["HS256"], "keys": [{"jwk": {"kty": "oct", "k": "AA"}}]},
        # two key sources
        {"issuer": "i", "discovery": True, "jwks_uri": "https://x/jwks"},
        # no key source
        {"issuer": "i"},
        {"issuer": "i", "algorithms": ["none"], "discovery": True},
    ],
)
def test_unsafe_issuer_configs_rejected(issuer: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        authz_settings(identity_config(issuer))


def test_weak_secret_and_plain_http_rejected() -> None:
    weak = identity_config({"issuer": "i", "algorithms": ["HS256"], "keys": [{"secret": "short"}]})
    with pytest.raises(ValueError, match="shorter than 32 bytes"):
        authz_settings(weak)
    remote = identity_config({"issuer": "http://idp.example.com", "discovery": True})
    with pytest.raises(ValueError, match="https"):
        authz_settings(remote)
    jwks = identity_config({"issuer": "i", "jwks_uri": "http://10.0.0.1/keys"})
    with pytest.raises(ValueError, match="https"):
        authz_settings(jwks)


def test_weak_secret_file_and_missing_key_file_name_the_key(tmp_path: Any) -> None:
    (tmp_path / "weak").write_text("short\n")
    weak = identity_config(
        {"issuer": "i", "algorithms": ["HS256"], "keys": [{"secret_file": str(tmp_path / "weak")}]}
    )
    with pytest.raises(AuthzConfigError, match=r"issuer 'i' keys\[0\]: HMAC secret shorter"):
        build_authenticator(authz_settings(weak))
    missing = identity_config(
        {"issuer": "i", "algorithms": ["ES256"], "keys": [{"pem_file": str(tmp_path / "nope")}]}
    )
    with pytest.raises(AuthzConfigError, match="cannot read key file"):
        build_authenticator(authz_settings(missing))


async def test_token_cache_skips_signature_and_expires_with_token(
    idp: IdP, rsa_key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    source = authz_settings(identity_config(discovery_issuer(idp))).identity.sources[0]
    verifier = JwtVerifier(source, clock=clock)
    calls = []
    real_check = verifier._check_signature

    def counting_check(*args: Any) -> None:
        calls.append(1)
        real_check(*args)

    monkeypatch.setattr(verifier, "_check_signature", counting_check)
    now = int(clock.now)
    token = rsa_key.sign(idp.claims(iat=now, exp=now + 100))
    view = None
    try:
        first = await verifier.verify(token, view)  # type: ignore[arg-type]
        second = await verifier.verify(token, view)  # type: ignore[arg-type]
        assert first == second
        assert len(calls) == 1
        assert verifier.cache is not None and len(verifier.cache) == 1
        assert token not in repr(verifier.cache._entries._entries)
        clock.advance(99)
        await verifier.verify(token, view)  # type: ignore[arg-type]
        assert len(calls) == 1
        # past exp the entry is gone, the token is verified again and found expired
        clock.advance(2 + 30)
        with pytest.raises(Exception, match="expired"):
            await verifier.verify(token, view)  # type: ignore[arg-type]
        assert len(calls) == 2
    finally:
        await verifier.close()


async def test_token_cache_off(idp: IdP, rsa_key: SigningKey) -> None:
    source = authz_settings(
        identity_config(discovery_issuer(idp), token_cache=False)
    ).identity.sources[0]
    verifier = JwtVerifier(source)
    try:
        token = rsa_key.sign(idp.claims())
        for _ in range(3):
            await verifier.verify(token, None)  # type: ignore[arg-type]
        assert verifier.cache is None
    finally:
        await verifier.close()


@pytest.mark.parametrize(
    ("claims", "code"),
    [
        ({"aud": ["api", 7]}, "invalid_claim"),
        ({"aud": {"x": "api"}}, "invalid_claim"),
        ({"sub": 123}, "invalid_claim"),
        ({"jti": ["a"]}, "invalid_claim"),
        ({"sub": None, "azp": "client"}, "missing_claim"),
        ({"exp": True}, "invalid_claim"),
    ],
)
async def test_ill_typed_claims(
    service: AuthzService, idp: IdP, rsa_key: SigningKey, claims: dict[str, Any], code: str
) -> None:
    assert await rejected_code(service, rsa_key.sign(idp.claims(**claims))) == code


@pytest.mark.parametrize(
    "signature",
    [b"\x00" * 64, b"\x00" * 63, b"", b"\x01" * 200],
    ids=["r=s=0", "short", "empty", "long"],
)
async def test_ecdsa_psychic_and_malformed_signatures(idp: IdP, signature: bytes) -> None:
    """CVE-2022-21449 class: an all-zero ECDSA signature must not verify."""
    key = new_key("ES256")
    idp.keys = [key]
    svc = await start_service(identity_config(discovery_issuer(idp)))
    try:
        header_payload = key.sign(idp.claims()).rpartition(".")[0]
        code = await rejected_code(svc, f"{header_payload}.{b64url(signature)}")
        assert code == ("malformed" if not signature else "bad_signature")
    finally:
        await svc.close()


async def test_reload_rereads_static_key_files(tmp_path: Any, idp: IdP) -> None:
    old, new = new_key("ES256", "k"), new_key("ES256", "k")

    def write(key: SigningKey) -> None:
        pem = key.private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        (tmp_path / "k.pem").write_bytes(pem)

    write(old)
    issuer = {
        "issuer": "https://static.example.com",
        "algorithms": ["ES256"],
        "keys": [{"kid": "k", "pem_file": str(tmp_path / "k.pem")}],
    }
    svc = await start_service(identity_config(issuer))
    claims = idp.claims(iss="https://static.example.com", aud=None)
    old_token, new_token = old.sign(claims), new.sign(claims)
    try:
        assert status_of(await check_token(svc, old_token)) == 200
        write(new)
        assert svc.reload() is True
        # the cached verification of the withdrawn key's token is gone too
        assert await rejected_code(svc, old_token) == "bad_signature"
        assert status_of(await check_token(svc, new_token)) == 200
        (tmp_path / "k.pem").write_text("not a key")
        assert svc.reload() is False
        assert status_of(await check_token(svc, new_token)) == 200
    finally:
        await svc.close()
