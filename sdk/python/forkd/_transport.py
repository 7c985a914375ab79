"""HTTP/1.1 to forkd serve: over its Unix socket, or over TCP/TLS with a token.

One connection per call (the daemon is local or near, and this keeps the
client safe to share between threads). Every call has a timeout: the socket
timeout applies to connecting and to each read and write.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import urllib.parse
from typing import Any, Dict, Mapping, Optional, Tuple

from .errors import ConnectionFailed, RequestTimeout, error_from_response

DEFAULT_SOCKET = "/var/lib/forkd/forkd.sock"
DEFAULT_TIMEOUT = 60.0

_NO_TIMEOUT = object()


def _user_agent() -> str:
    from . import __version__
    return f"forkd-python/{__version__}"


class UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTPConnection whose transport is an AF_UNIX stream socket."""

    def __init__(self, socket_path: str, timeout: Optional[float] = DEFAULT_TIMEOUT):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class Response:
    """A finished (non-streamed) answer."""

    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        try:
            return json.loads(self.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise ConnectionFailed(
                f"the daemon's answer ({self.status}) is not JSON: {e}",
                status=self.status) from e


class Transport:
    """Where and how to reach the daemon.

    socket: path of the daemon's Unix socket (default $FORKD_SOCKET, else
    /var/lib/forkd/forkd.sock). url: ``http://HOST:PORT``, ``https://HOST:PORT``
    (optionally with a path prefix) or ``unix:///path/to/forkd.sock``.
    token: bearer token for TCP (default $FORKD_TOKEN when a URL is given).
    """

    def __init__(self, socket_path: Optional[str] = None, url: Optional[str] = None,
                 token: Optional[str] = None, timeout: Optional[float] = DEFAULT_TIMEOUT,
                 ssl_context: Optional[ssl.SSLContext] = None):
        if socket_path is not None and url is not None:
            raise ValueError("give either socket or url, not both")
        self.timeout = timeout
        self.token = token
        self.ssl_context = ssl_context
        self.prefix = ""
        self.host: Optional[str] = None
        self.port: Optional[int] = None
        self.scheme = "unix"
        if url is not None:
            parts = urllib.parse.urlsplit(url)
            scheme = parts.scheme.lower()
            if scheme == "unix":
                socket_path = parts.path or parts.netloc
                if not socket_path:
                    raise ValueError(f"unix URL without a path: {url!r}")
            elif scheme in ("http", "https"):
                if not parts.hostname:
                    raise ValueError(f"URL without a host: {url!r}")
                self.scheme = scheme
                self.host = parts.hostname
                self.port = parts.port or (443 if scheme == "https" else 80)
                self.prefix = parts.path.rstrip("/")
                if self.token is None:
                    self.token = os.environ.get("FORKD_TOKEN") or None
            else:
                raise ValueError(f"unsupported URL scheme {parts.scheme!r} in {url!r} "
                                 "(http, https or unix)")
        if self.scheme == "unix":
            self.socket_path = socket_path or os.environ.get("FORKD_SOCKET") or DEFAULT_SOCKET
        else:
            self.socket_path = None

    def describe(self) -> str:
        if self.scheme == "unix":
            return f"unix:{self.socket_path}"
        return f"{self.scheme}://{self.host}:{self.port}{self.prefix}"

    def __repr__(self) -> str:
        return f"Transport({self.describe()})"

    # -- connections --------------------------------------------------------

    def _connection(self, timeout: Optional[float]) -> http.client.HTTPConnection:
        if self.scheme == "unix":
            return UnixHTTPConnection(self.socket_path, timeout=timeout)
        if self.scheme == "https":
            ctx = self.ssl_context or ssl.create_default_context()
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout,
                                               context=ctx)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def _connect(self, timeout: Optional[float]) -> http.client.HTTPConnection:
        # Connecting always has a deadline (the transport's own when the
        # call's is None, e.g. a command without a time limit).
        conn = self._connection(timeout if timeout is not None else self.timeout)
        try:
            conn.connect()
            conn.sock.settimeout(timeout)
        except FileNotFoundError as e:
            conn.close()
            raise ConnectionFailed(
                f"cannot connect to forkd at {self.describe()}: no such socket "
                "(is `forkd serve` running? set FORKD_SOCKET)") from e
        except ConnectionRefusedError as e:
            conn.close()
            raise ConnectionFailed(
                f"cannot connect to forkd at {self.describe()}: connection refused "
                "(is `forkd serve` running?)") from e
        except PermissionError as e:
            conn.close()
            raise ConnectionFailed(
                f"cannot connect to forkd at {self.describe()}: permission denied "
                "(the socket is for root or the daemon's user)") from e
        except socket.timeout as e:
            conn.close()
            raise ConnectionFailed(
                f"cannot connect to forkd at {self.describe()}: timed out") from e
        except ssl.SSLError as e:
            conn.close()
            raise ConnectionFailed(
                f"TLS handshake with {self.describe()} failed: {e}") from e
        except OSError as e:
            conn.close()
            raise ConnectionFailed(f"cannot connect to forkd at {self.describe()}: {e}") from e
        return conn

    def _headers(self, extra: Optional[Mapping[str, str]]) -> Dict[str, str]:
        h = {"User-Agent": _user_agent(), "Accept": "application/json"}
        if self.token and self.scheme != "unix":
            h["Authorization"] = f"Bearer {self.token}"
        if extra:
            h.update(extra)
        return h

    def target(self, path: str, query: Optional[Mapping[str, Any]] = None) -> str:
        t = self.prefix + path
        if query:
            items = [(k, v) for k, v in query.items() if v is not None]
            if items:
                t += "?" + urllib.parse.urlencode(items, quote_via=urllib.parse.quote)
        return t

    # -- requests -----------------------------------------------------------

    def open(self, method: str, path: str, *, query: Optional[Mapping[str, Any]] = None,
             body: Optional[bytes] = None, json_body: Any = None,
             headers: Optional[Mapping[str, str]] = None,
             timeout: Any = _NO_TIMEOUT) -> Tuple[http.client.HTTPConnection,
                                                   http.client.HTTPResponse]:
        """Sends a request and returns (connection, response) with the body
        unread, or raises the mapped error for a status >= 400. The caller
        closes the connection."""
        if timeout is _NO_TIMEOUT:
            timeout = self.timeout
        hdrs = self._headers(headers)
        if json_body is not None:
            body = json.dumps(json_body, separators=(",", ":")).encode("utf-8")
            hdrs.setdefault("Content-Type", "application/json")
        elif body is not None:
            hdrs.setdefault("Content-Type", "application/octet-stream")
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""
        conn = self._connect(timeout)
        try:
            try:
                conn.request(method, self.target(path, query), body=body, headers=hdrs)
                resp = conn.getresponse()
            except socket.timeout as e:
                raise RequestTimeout(
                    f"{method} {path}: no answer from {self.describe()} within "
                    f"{timeout} s") from e
            except (http.client.HTTPException, OSError) as e:
                raise ConnectionFailed(
                    f"{method} {path}: connection to {self.describe()} failed: "
                    f"{type(e).__name__}: {e}") from e
            if resp.status >= 400:
                try:
                    data = resp.read()
                except (http.client.HTTPException, OSError):
                    data = b""
                raise error_from_response(resp.status, data, resp.reason)
        except BaseException:
            conn.close()
            raise
        return conn, resp

    def request(self, method: str, path: str, **kw) -> Response:
        """Sends a request and reads the whole answer."""
        timeout = kw.get("timeout", self.timeout)
        conn, resp = self.open(method, path, **kw)
        try:
            try:
                data = resp.read()
            except socket.timeout as e:
                raise RequestTimeout(
                    f"{method} {path}: answer from {self.describe()} stalled for "
                    f"{timeout} s") from e
            except (http.client.HTTPException, OSError) as e:
                raise ConnectionFailed(
                    f"{method} {path}: reading the answer from {self.describe()} "
                    f"failed: {type(e).__name__}: {e}") from e
            return Response(resp.status, resp.headers, data)
        finally:
            conn.close()

    def json(self, method: str, path: str, **kw) -> Any:
        return self.request(method, path, **kw).json()


__all__ = ["Transport", "UnixHTTPConnection", "Response", "DEFAULT_SOCKET", "DEFAULT_TIMEOUT"]
