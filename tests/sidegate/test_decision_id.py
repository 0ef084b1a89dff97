"""The Check's decision id: what str(uuid.uuid4()) gives, without the UUID object."""

from __future__ import annotations

import uuid

from sidegate.extauthz.service import new_decision_id

# version nibble and variant bits, the only fixed bits of a version-4 UUID
FIXED = (0xF << 76) | (0x3 << 62)


def test_decision_ids_are_random_version_4_uuids() -> None:
    ids = [new_decision_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    varied = 0
    first = uuid.UUID(ids[0]).int
    for value in ids:
        parsed = uuid.UUID(value)
        assert str(parsed) == value  # canonical: lower-case 8-4-4-4-12
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        varied |= parsed.int ^ first
    # all 122 random bits vary across 2,000 ids (each stays put with probability 2**-1999)
    assert varied == ((1 << 128) - 1) & ~FIXED
