"""Config lint for ``check-config``: identity sources that can never receive a credential.

Sources are tried in order and the first that claims a located credential decides, so a source
is dead when an earlier one covers all its routes, finds a credential wherever it would, and
claims every credential it could claim (``shape: any``, or the same shape at one location).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sidegate.extauthz.identity.settings import IdentitySettings
    from sidegate.extauthz.identity.source import CredentialLocation, SourceSettings


def _covers_location(earlier: CredentialLocation, later: CredentialLocation) -> bool:
    if earlier.header_name or later.header_name:
        if earlier.header_name != later.header_name:
            return False
        if earlier.prefix is None:
            return True  # a bare header location finds the value whatever its scheme
        return later.prefix is not None and earlier.prefix.lower() == later.prefix.lower()
    return (earlier.query, earlier.cookie) == (later.query, later.cookie)


def _shadows(earlier: SourceSettings, later: SourceSettings) -> bool:
    if not (earlier.routes.unrestricted or earlier.routes == later.routes):
        return False
    if not all(
        any(_covers_location(e, loc) for e in earlier.locations) for loc in later.locations
    ):
        return False
    if earlier.shape == "any":
        return True
    # with several locations the earlier source may find a different credential than the later
    return earlier.shape == later.shape and len(earlier.locations) == 1


def unreachable_sources(settings: IdentitySettings) -> list[str]:
    """One warning per source that an earlier source always takes the credential from."""
    warnings = []
    for index, later in enumerate(settings.sources):
        for earlier in settings.sources[:index]:
            if _shadows(earlier, later):
                warnings.append(
                    f"authz.identity.sources[{index}] ({later.name!r}) can never receive a "
                    f"credential: source {earlier.name!r} comes first, covers its routes and "
                    f"credential location and claims shape {earlier.shape!r}; reorder them, "
                    f"or narrow {earlier.name!r} with shape or routes"
                )
                break
    return warnings
