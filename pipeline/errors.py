"""Errors that carry a message meant for a merchandiser, not a developer.

Anything raised as `UserFacingError` is shown as-is in a failed row, the CLI and the UI;
everything else is translated by `describe_error` so no traceback ever reaches a person.
"""

from __future__ import annotations


class UserFacingError(Exception):
    """An error whose message is safe and useful to show to the person who uploaded the file."""


class BadInputError(UserFacingError):
    """The uploaded file, row or URL cannot be used (wrong type, corrupt, too big, unsafe)."""


class ServiceError(UserFacingError):
    """A backend (model endpoint, OpenAI, S3) failed or is unavailable; retrying later may work."""


class ConfigError(UserFacingError):
    """The deployment is misconfigured (missing key, unknown backend, model not loadable)."""


# Conflicts the stores raise for admin-edited documents (pipeline/admin/taxonomy.py, brand.py); defined here so
# the stores need nothing from the admin layer above them.
class TaxonomyError(UserFacingError):
    """An imported or edited taxonomy that cannot be used (one plain sentence)."""


class StaleTaxonomyError(TaxonomyError):
    """Another admin saved a version since this editor loaded the one it started from."""

    def __init__(self, based_on: int, latest: int, who: str | None, at: str | None) -> None:
        super().__init__(f"Version {latest} was saved by {who or 'someone'} at {at or 'an unknown time'} after you started "
                         f"from version {based_on}; reload it and apply your changes again.")
        self.based_on, self.latest = based_on, latest


class StyleGuideConflict(BadInputError):
    """A style guide save sent a version that is no longer current: another admin saved meanwhile."""

    def __init__(self, who: str | None, at: str | None) -> None:
        self.who, self.at = who or "someone", at or "an unknown time"
        super().__init__(f"Not saved: {self.who} saved the style guide at {self.at} since you opened it; "
                         "reload to see their version, then make your change again.")

def describe_error(exc: BaseException) -> str:
    """One line a merchandiser can act on, for any exception."""
    if isinstance(exc, UserFacingError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "The image is too large to process."
    return f"Unexpected problem while processing this item ({type(exc).__name__}). It was skipped; try again or ask an admin."


def attach_usage(error: BaseException, usage) -> BaseException:
    """Let `error` carry the billable calls made before it was raised (a summary call that was paid
    for but unusable), so the caller can record them with the failed item. Returns `error`."""
    error.usage = list(usage)  # type: ignore[attr-defined]
    return error


def usage_of(error: BaseException) -> list:
    """The billable calls `error` carries (see `attach_usage`); [] for any other exception."""
    return list(getattr(error, "usage", None) or [])
