"""What the bench's requests look like, and the sidegate config that answers them.

Two workloads, both driven through the same Envoy with the same wrk options:

``realistic`` (the headline): what a user runs. Every request carries one of ``--tokens``
distinct RS256 JWTs (rotated per request by the wrk Lua script), the shipped RBAC policy
decides (``rbac/decision``), and the rate limiter takes three Redis buckets per request in one
EVALSHA: the tier bucket keyed by ``tier`` and ``consumer`` from the Check's dynamic metadata,
a ``generic_key`` and a ``client_version`` (request header) bucket. Paths rotate over
``/orders`` and ``/orders/1`` .. ``/orders/19``.

``anonymous`` (the cache-friendly best case, kept for comparison with older numbers): no
credential, the default policy (``envoy/authz/allow``), one in-memory bucket; every request is
the same ``GET /bench``, so after the first call every decision is a cache hit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import BENCH_DIR, REPO_ROOT

WORKLOADS = ("realistic", "anonymous")
WORKLOAD_LABELS = {
    "realistic": "realistic: JWT x N tokens, RBAC policy, 3 Redis buckets",
    "anonymous": "best case: anonymous, cached decision, 1 memory bucket",
}
ISSUER = "https://idp.bench.example"
AUDIENCE = "orders-api"
KID = "bench-rs256"
# Role sets and tiers the tokens cycle through: every one may GET /orders (rbac.rego).
ROLE_SETS = (["viewer"], ["editor"], ["viewer", "editor"], ["admin"])
TIERS = ("free", "default", "premium", "enterprise")
REALISTIC_PATHS = ("/orders", *(f"/orders/{i}" for i in range(1, 20)))


@dataclass(frozen=True)
class Workload:
    name: str
    paths: tuple[str, ...]
    tokens_file: Path | None = None
    tokens: int = 0
    # Envoy: add the generic_key and client_version descriptors to the tier/consumer one.
    extra_descriptors: bool = False
    authz: dict[str, Any] = field(default_factory=dict)
    ratelimit: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return WORKLOAD_LABELS[self.name]


def anonymous_workload() -> Workload:
    return Workload(
        name="anonymous",
        paths=("/bench",),
        authz={"policy": {"engine": "embedded", "directory": str(REPO_ROOT / "policies")}},
        ratelimit={"backend": "memory", "rules_dir": str(BENCH_DIR / "config" / "ratelimit")},
    )


def realistic_workload(workdir: Path, redis_url: str, tokens: int = 1000) -> Workload:
    """Mint ``tokens`` RS256 JWTs (one consumer each) with a fresh key; write the public key
    and the tokens (one per line, for the wrk script) into ``workdir``."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = workdir / "bench-jwt.pem"
    pem.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    now = int(time.time())
    lines = []
    for i in range(tokens):
        claims = {
            "iss": ISSUER, "aud": AUDIENCE, "sub": f"user-{i:05d}", "azp": f"client-{i:05d}",
            "iat": now, "exp": now + 24 * 3600, "tier": TIERS[i % len(TIERS)],
            "roles": ROLE_SETS[i % len(ROLE_SETS)], "scope": "profile orders:read",
            "email": f"user-{i:05d}@bench.example", "name": f"Bench User {i}",
        }
        lines.append(jwt.encode(claims, key, algorithm="RS256", headers={"kid": KID}))
    tokens_file = workdir / "bench-tokens.txt"
    tokens_file.write_text("\n".join(lines) + "\n")
    source = {
        "name": "bench-idp",
        "type": "jwt",
        "issuers": [{
            "issuer": ISSUER, "algorithms": ["RS256"], "audiences": [AUDIENCE],
            "keys": [{"kid": KID, "pem_file": str(pem)}],
        }],
    }
    return Workload(
        name="realistic",
        paths=REALISTIC_PATHS,
        tokens_file=tokens_file,
        tokens=tokens,
        extra_descriptors=True,
        authz={
            "identity": {"sources": [source]},
            "policy": {"engine": "embedded", "directory": str(REPO_ROOT / "policies"),
                       "default_path": "rbac/decision"},
        },
        ratelimit={
            "backend": "redis",
            "rules_dir": str(BENCH_DIR / "config" / "ratelimit-realistic"),
            "redis": {"url": redis_url},
        },
    )
