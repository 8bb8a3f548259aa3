"""One small exception hierarchy, so the CLI can tell user errors from bugs."""

from __future__ import annotations


class SailsError(Exception):
    """Base of every error this package raises on purpose.

    ``hint`` says what to do next; the CLI prints ``message`` and the hint on one line.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def one_line(self) -> str:
        text = str(self).strip().replace("\n", " ")
        return f"{text} ({self.hint})" if self.hint else text


class UserInputError(SailsError):
    """Malformed input from a person: a bad uid, an unknown stage name, a bad CSV."""


class ConfigError(SailsError):
    """``sails.toml`` or a ``SAILS_*`` override is invalid."""


class ProjectNotFoundError(SailsError):
    """No project space could be found."""


class CatalogError(SailsError):
    """The catalog file is unusable (not SQLite, newer schema, read-only...)."""




class IllegalTransitionError(SailsError):
    """A stage state change that the state machine does not allow."""


class LeaseLostError(SailsError):
    """The caller no longer holds the lease on a stage it tried to finish."""


class NotFoundError(SailsError):
    """A MOUS, target or stage that the catalog does not hold."""


class CasaJobError(SailsError):
    """A CASA child job failed; ``log_path`` says where to read more, ``error_kind`` why
    (one of ``sails.casa.contract.ERROR_KINDS``; None when not known)."""

    def __init__(self, message: str, hint: str | None = None, log_path: str | None = None,
                 error_kind: str | None = None):
        super().__init__(message, hint)
        self.log_path = log_path
        self.error_kind = error_kind


class DownloadError(SailsError):
    """A transfer failed in a way retries cannot fix (4xx, size mismatch...)."""


class TransientError(SailsError):
    """A failure worth retrying with backoff (network, 5xx, busy service)."""


class IngestError(SailsError):
    """Archive responses or input tables that cannot be ingested."""


class CatalogBusyError(CatalogError, TransientError):
    """Another process held the catalog's write lock past the busy timeout: try again
    (a stage that meets it is retried like any transient failure)."""


class ArchiveUnavailableError(IngestError, TransientError):
    """An archive service timed out, could not be reached or answered 5xx/429: try later."""
