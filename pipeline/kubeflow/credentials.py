"""Credentials: the bearer token (never printed), whether it may travel to an endpoint, and kfp's logs
made one line each with the token masked."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import urllib.parse
from collections.abc import Iterator, Mapping

# Credentials: a bearer token in KFP_TOKEN, or a file holding one (KFP's own variable for a
# projected service-account token). Read, passed to the client, never printed.
TOKEN_ENV = "KFP_TOKEN"
TOKEN_PATH_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
ENDPOINT_ENV = "KF_PIPELINES_ENDPOINT"


class Token:
    """A bearer token that never shows itself in str(), repr() or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        """The token itself: only for handing to the client."""
        return self._value

    def __repr__(self) -> str:
        return "Token(***)"

    __str__ = __repr__


def token_from_env(environ: Mapping[str, str]) -> Token | None:
    """Reads the token from KFP_TOKEN, or from the file named by KF_PIPELINES_SA_TOKEN_PATH.

    Args:
      environ: the environment (os.environ).

    Returns:
      The token, or None when neither is set (e.g. a port-forwarded, unauthenticated server).

    Raises:
      ValueError: the token file cannot be read or is empty (the message names the file only).
    """
    if environ.get(TOKEN_ENV, "").strip():
        return Token(environ[TOKEN_ENV].strip())
    path = environ.get(TOKEN_PATH_ENV, "").strip()
    if not path:
        return None
    try:
        with open(path) as f:
            value = f.read().strip()
    except OSError as e:
        raise ValueError(f"cannot read the token file {path} ({TOKEN_PATH_ENV}): {e.strerror}") from None
    if not value:
        raise ValueError(f"the token file {path} ({TOKEN_PATH_ENV}) is empty")
    return Token(value)


def one_line(error: BaseException, token: Token | None = None) -> str:
    """A short one-line description of a client error, with the token masked.

    Args:
      error: the exception (kfp_server_api ApiException, urllib3 errors, ...).
      token: masked wherever it appears.

    Returns:
      e.g. ``HTTP 401 Unauthorized`` or ``MaxRetryError: ... Connection refused``.
    """
    status = getattr(error, "status", None)
    reason = getattr(error, "reason", None)
    if isinstance(status, int):
        text = f"HTTP {status} {reason or ''}".strip()
    elif isinstance(reason, Exception):  # urllib3's MaxRetryError wraps the real cause
        cause = re.sub(r"^<[^>]*>:\s*", "", str(reason).splitlines()[0] if str(reason) else "")
        text = f"{type(reason).__name__}: {cause}" if cause else type(reason).__name__
    else:
        first = next((line for line in str(error).splitlines() if line.strip()), "")
        text = f"{type(error).__name__}: {first}" if first else type(error).__name__
    if token is not None and token.reveal():
        text = text.replace(token.reveal(), "***")
    return text[:400]


def is_loopback(endpoint: str) -> bool:
    """Whether an endpoint's host is this machine (localhost, 127.0.0.0/8, ::1): kubectl port-forward."""
    host = urllib.parse.urlsplit(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_token_transport(endpoint: str, token: Token | None, insecure: bool = False) -> None:
    """Refuses to send a bearer token in clear text to another machine.

    Raises:
      ValueError: a token, a plain ``http://`` endpoint that is not loopback, and no ``insecure``.
    """
    scheme = urllib.parse.urlsplit(endpoint).scheme.lower()
    if token is not None and scheme == "http" and not is_loopback(endpoint) and not insecure:
        raise ValueError(
            f"refusing to send the bearer token over plain http to {urllib.parse.urlsplit(endpoint).hostname}: "
            "use https://, or --insecure if the network is trusted"
        )


class _RedactingFilter(logging.Filter):
    """Makes a log record one line without a traceback, with the token masked.

    kfp's client logs failed health checks with ``logging.exception``: the traceback of a
    kfp_server_api ApiException, whose text holds the server's response headers and body. A
    server (or proxy) that echoes the request put the bearer token on stderr that way.
    """

    def __init__(self, token: Token | None):
        super().__init__()
        self._token = token

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage().splitlines()[0] if record.getMessage() else ""
        if record.exc_info and record.exc_info[1] is not None:
            text = f"{text}: {one_line(record.exc_info[1], self._token)}"
        if self._token is not None and self._token.reveal():
            text = text.replace(self._token.reveal(), "***")
        record.msg, record.args, record.exc_info, record.exc_text, record.stack_info = text[:500], (), None, None, None
        return True


@contextlib.contextmanager
def redacted_client_logs(token: Token | None) -> Iterator[None]:
    """While active, kfp's and its HTTP stack's log records are one line each, token masked."""
    redactor = _RedactingFilter(token)
    loggers = [logging.getLogger(name) for name in ("", "kfp", "kfp_server_api", "urllib3")]
    handlers = [h for h in logging.getLogger().handlers] + [logging.lastResort]
    targets = [t for t in [*loggers, *handlers] if t is not None]
    for target in targets:
        target.addFilter(redactor)
    try:
        yield
    finally:
        for target in targets:
            target.removeFilter(redactor)
