"""`Status` objects: how the real API server reports failures."""

from __future__ import annotations

from .resources import ResourceType

_REASONS = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
    409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType", 422: "Invalid", 429: "TooManyRequests",
    500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout",
}


class ApiError(Exception):
    """A request failure, carried to the HTTP layer as a `Status` body with the same code."""

    def __init__(
        self, code: int, message: str, reason: str | None = None, details: dict | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or _REASONS.get(code, "Unknown")
        self.details = details
        self.retry_after = retry_after  # seconds: a Retry-After header, and details.retryAfterSeconds
        if retry_after is not None:
            self.details = {**(details or {}), "retryAfterSeconds": retry_after}

    def status(self) -> dict:
        body = {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(rtype: ResourceType, name: str) -> dict:
    details = {"name": name, "kind": rtype.plural}
    if rtype.group:
        details["group"] = rtype.group
    return details


def not_found(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(404, f'{rtype.qualified_plural} "{name}" not found', details=_details(rtype, name))


def already_exists(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(
        409, f'{rtype.qualified_plural} "{name}" already exists', "AlreadyExists", _details(rtype, name)
    )


def conflict(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {rtype.qualified_plural} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        "Conflict", _details(rtype, name),
    )


def expired(requested: str, oldest: int) -> ApiError:
    return ApiError(410, f"too old resource version: {requested} ({oldest})", "Expired")


def too_large(requested: int, current: int) -> ApiError:
    """What a watch from a resourceVersion the server has not reached gets (etcd restored from an older backup)."""
    return ApiError(
        504, f"Too large resource version: {requested}, current: {current}", "Timeout",
        {"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
         "retryAfterSeconds": 1},
    )


def continue_expired() -> ApiError:
    return ApiError(
        410, "The provided continue parameter is too old to display a consistent list result. You can start a new "
        "list without the continue parameter.", "Expired",
    )
