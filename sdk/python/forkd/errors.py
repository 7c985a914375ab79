"""Typed errors of the forkd SDK.

Every error the daemon returns has a status code and a body
``{"error":{"code":CODE,"message":TEXT}}`` (docs/rest-api.md). The SDK maps
CODE to an exception class, falling back to the status code when the body
is missing or not in that shape.
"""

from __future__ import annotations

import json
from typing import Optional


class ForkdError(Exception):
    """Base class of every error raised by the SDK.

    ``status`` is the HTTP status (None when there was no HTTP answer),
    ``code`` the daemon's error code (e.g. ``"not_found"``) and ``message``
    its human-readable text.
    """

    default_code: Optional[str] = None

    def __init__(self, message: str = "", status: Optional[int] = None,
                 code: Optional[str] = None):
        self.message = message
        self.status = status
        self.code = code if code is not None else self.default_code
        super().__init__(message)

    def __str__(self) -> str:
        parts = []
        if self.status is not None:
            parts.append(str(self.status))
        if self.code:
            parts.append(self.code)
        head = " ".join(parts)
        if head:
            return f"{head}: {self.message}" if self.message else head
        return self.message

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(message={self.message!r}, "
                f"status={self.status!r}, code={self.code!r})")


class BadRequest(ForkdError):
    """400: the request was malformed (bad field, unknown field, range, tag)."""
    default_code = "bad_request"


class Unauthorized(ForkdError):
    """401: missing or wrong bearer token (TCP)."""
    default_code = "unauthorized"


class Forbidden(ForkdError):
    """403: the caller is not allowed (Unix socket peer is neither root nor the daemon's uid)."""
    default_code = "forbidden"


class NotFound(ForkdError):
    """404: no such VM, snapshot, file or route."""
    default_code = "not_found"


class MethodNotAllowed(ForkdError):
    """405: the route exists but not with this method."""
    default_code = "method_not_allowed"


class Conflict(ForkdError):
    """409: e.g. deleting a VM with children without cascade, a tag in use."""
    default_code = "conflict"


class PayloadTooLarge(ForkdError):
    """413: the request body is too large."""
    default_code = "payload_too_large"


class TooManyRequests(ForkdError):
    """429: the daemon is out of a resource (VMs, space) or rate-limited."""
    default_code = "too_many_requests"


class ServerError(ForkdError):
    """5xx: the daemon failed."""
    default_code = "internal"


class Unavailable(ServerError):
    """503: the VM or its agent is not reachable (not running, no vsock)."""
    default_code = "unavailable"


class Unsupported(ServerError):
    """501: the daemon's machine cannot do what was asked (e.g. cgroup limits
    without cgroup v2; the message says what is mounted at /sys/fs/cgroup)."""
    default_code = "not_implemented"


class ConnectionFailed(ForkdError, ConnectionError):
    """The daemon could not be reached (socket missing, refused, connection
    lost, or an answer that is not HTTP/the contract)."""


class RequestTimeout(ForkdError, TimeoutError):
    """The daemon did not answer within the call's timeout."""


class CommandTimeout(ForkdError, TimeoutError):
    """A command run in a sandbox exceeded its timeout (the agent killed it,
    or the stream stopped before the client-side deadline).

    ``stdout``/``stderr`` hold the output received until then (str), and
    ``result`` the CommandResult if the daemon reported one.
    """

    def __init__(self, message: str = "", status: Optional[int] = None,
                 code: Optional[str] = None, stdout: str = "", stderr: str = "",
                 result=None):
        super().__init__(message, status, code)
        self.stdout = stdout
        self.stderr = stderr
        self.result = result


_BY_CODE = {
    "bad_request": BadRequest,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "not_found": NotFound,
    "method_not_allowed": MethodNotAllowed,
    "conflict": Conflict,
    "payload_too_large": PayloadTooLarge,
    "too_many_requests": TooManyRequests,
    "internal": ServerError,
    "unavailable": Unavailable,
    "not_implemented": Unsupported,
    "timeout": CommandTimeout,
    "timed_out": CommandTimeout,
}

_BY_STATUS = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    413: PayloadTooLarge,
    429: TooManyRequests,
    501: Unsupported,
    503: Unavailable,
}

_CODE_STATUS = {
    "bad_request": 400, "unauthorized": 401, "forbidden": 403, "not_found": 404,
    "method_not_allowed": 405, "conflict": 409, "payload_too_large": 413,
    "too_many_requests": 429, "internal": 500, "not_implemented": 501, "unavailable": 503,
}


def class_for(status: Optional[int], code: Optional[str]) -> type:
    """The exception class for a daemon error: by code first, then status."""
    if code and code in _BY_CODE:
        return _BY_CODE[code]
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if status is not None and 500 <= status <= 599:
        return ServerError
    return ForkdError


def error_from_object(obj, status: Optional[int] = None) -> ForkdError:
    """An exception from a decoded ``{"code":..,"message":..}`` object."""
    code = message = None
    if isinstance(obj, dict):
        code = obj.get("code") if isinstance(obj.get("code"), str) else None
        message = obj.get("message") if isinstance(obj.get("message"), str) else None
    if status is None and code in _CODE_STATUS:
        status = _CODE_STATUS[code]
    cls = class_for(status, code)
    return cls(message or code or "error", status=status, code=code)


def error_from_response(status: int, body: bytes, reason: str = "") -> ForkdError:
    """An exception from an HTTP error answer (status >= 400)."""
    code = message = None
    try:
        doc = json.loads(body.decode("utf-8"))
        err = doc.get("error") if isinstance(doc, dict) else None
        if isinstance(err, dict):
            if isinstance(err.get("code"), str):
                code = err["code"]
            if isinstance(err.get("message"), str):
                message = err["message"]
    except (ValueError, UnicodeDecodeError):
        pass
    if message is None:
        text = body.decode("utf-8", errors="replace").strip()
        message = text[:500] if text else (reason or f"HTTP {status}")
    cls = class_for(status, code)
    return cls(message, status=status, code=code)
