"""One exception hierarchy for fleet.

Every error fleet raises on purpose derives from :class:`FleetError`.  Each class
carries the HTTP status and the CLI exit code it maps to; the mapping is applied
only at the edges (the FastAPI exception handlers and ``fleetctl``'s ``main``).
"""

from __future__ import annotations

EXIT_FAILURE = 1
EXIT_USAGE = 2


class FleetError(Exception):
    """Base of every deliberate fleet error."""

    http_status = 500
    exit_code = EXIT_FAILURE

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_json(self) -> dict[str, object]:
        body: dict[str, object] = {"error": self.message, "type": type(self).__name__}
        if self.field is not None:
            body["field"] = self.field
        return body


class UsageError(FleetError):
    """Bad input from a user: a wrong value, a malformed spec."""

    http_status = 422
    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """A configuration file or value is invalid (names the key path)."""


class NotFound(UsageError):
    """A named task, queue or worker does not exist."""

    http_status = 404


class Conflict(UsageError):
    """The request is well formed but clashes with the current state."""

    http_status = 409


class InvalidTransition(Conflict):
    """A state change that the state machine does not allow."""


class HostLost(Conflict):
    """This host was declared lost by another host's manager (its lease expired:
    frozen, partitioned); its attempts were ended and may run elsewhere now.
    Raised by the store when the host renews its lease: how a host that comes
    back learns it was fenced."""


class Fenced(Conflict):
    """A runner's write for an attempt that no longer owns its task (its host
    was declared lost, and the task failed or went on elsewhere): nothing was
    changed, and the runner must kill the attempt and record nothing."""


class PayloadTooLarge(UsageError):
    """A request body above ``fleet.api.max_body_mb``."""

    http_status = 413


class Unauthorized(FleetError):
    http_status = 401
    exit_code = EXIT_USAGE


class Forbidden(FleetError):
    """The caller is known but may not do this (not in ``fleet.api.group``, or
    naming another user as a task's submitter)."""

    http_status = 403
    exit_code = EXIT_USAGE


class StoreError(FleetError):
    """The store cannot be used (corrupt, newer schema, unreachable)."""

    http_status = 503


class StoreUnavailable(StoreError):
    """The store cannot be used *right now*: the disk is full, the database is
    read-only, an I/O error, a lock held too long.  A state that passes, not a
    bug: the API answers 503 naming the cause, workers and the manager back off
    and retry (see :mod:`fleet.store.faults`)."""

    def __init__(self, cause: str, detail: str = "") -> None:
        super().__init__(f"store unavailable: {cause}" + (f" ({detail})" if detail and detail != cause else ""))
        self.cause = cause


class ManagerUnavailable(FleetError):
    """No manager answers for this FLEET_HOME."""

    http_status = 503
