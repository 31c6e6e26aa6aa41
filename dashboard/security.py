"""Security headers on every response, proxies trusted as configured, early 413 for big
bodies, secrets redacted from logs."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import BadRequest, NotFound, RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix

# No inline script or style, no external origin: htmx, the charts and the pages'
# own scripts are files under /static.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
# rq-dashboard (mounted for admins only) ships inline scripts and styles of its own,
# and its client-side templates (underscore's _.template) compile with new Function,
# hence 'unsafe-eval'; it keeps every other restriction, external origins and framing
# included.
RELAXED_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
RELAXED_CSP_PREFIXES = ("/admin/rq",)

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}

# Browsers that reached us over HTTPS keep to HTTPS for a year.
STRICT_TRANSPORT_SECURITY = "max-age=31536000"

REDACTED = "[REDACTED]"
_REDACTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    # "Authorization: Bearer <token>", "bearer=<token>" and the like.
    (re.compile(r"(?i)\b(bearer[\s=:]+)[^\s\"',;&]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)\b(basic\s+)[A-Za-z0-9+/=]{6,}"), r"\1" + REDACTED),
    # Our own API tokens wherever they appear (query strings, paths, bodies).
    (re.compile(r"\belp_[A-Za-z0-9_\-]{6,}"), "elp_" + REDACTED),
    # password=..., "password": "...", secret_key=..., access_token=..., csrf_token=...
    (
        re.compile(
            r"(?i)((?:password|passwd|pwd|secret|secret_key|token|access_token|api_key|"
            r"csrf_token)[\"']?\s*[=:]\s*[\"']?)[^\s\"'&,;}]+"
        ),
        r"\1" + REDACTED,
    ),
    # Session cookies (a signed Flask session is a bearer credential too).
    (re.compile(r"(?i)\b((?:session|remember_token)=)[^\s;\"']+"), r"\1" + REDACTED),
)


def redact(text: str) -> str:
    """``text`` with bearer tokens, API tokens, passwords and session cookies replaced."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


_RecordFactory = Callable[..., logging.LogRecord]


class _RedactingFactory:
    """Wraps the LogRecord factory so every record, from any logger or handler, is redacted.

    A handler filter would miss handlers added later (gunicorn's, pytest's, an
    operator's); the record factory sees each record once, at creation.
    """

    def __init__(self, inner: _RecordFactory):
        self.inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.inner(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed log call: leave it for logging to report
            return record
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return record


def install_log_redaction() -> None:
    """Idempotent: wrap the process's LogRecord factory once."""
    current = logging.getLogRecordFactory()
    if not isinstance(current, _RedactingFactory):
        logging.setLogRecordFactory(_RedactingFactory(current))


def _refuse_oversized_bodies(app: Flask) -> None:
    limit = app.config.get("MAX_CONTENT_LENGTH")
    if not limit:
        return
    if request.content_length is not None:
        # Refused on the header alone, before a byte of the body is read, even on
        # routes that would answer 401 or 404 without reading it.
        if request.content_length > limit:
            raise RequestEntityTooLarge()
    elif "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        _buffer_chunked_body(limit)


def _buffer_chunked_body(limit: int) -> None:
    """Read a chunked body of at most ``limit`` bytes (413 past it) and give it a length.

    werkzeug's own limit on such streams stops *at* the limit without an error
    (the view then sees a truncated body), so read ``limit + 1`` bytes here. Only
    when the server terminates the stream (gunicorn and werkzeug's server do):
    otherwise reading could wait forever.
    """
    environ = request.environ
    if not environ.get("wsgi.input_terminated"):
        return
    stream = environ["wsgi.input"]
    body = bytearray()
    while len(body) <= limit:
        chunk = stream.read(min(64 * 1024, limit + 1 - len(body)))
        if not chunk:
            break
        body += chunk
    if len(body) > limit:
        raise RequestEntityTooLarge()
    environ["wsgi.input"] = io.BytesIO(bytes(body))
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.pop("HTTP_TRANSFER_ENCODING", None)


# Bodies whose values are parameters: the NUL rule looks into them.
FORM_MIMETYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _refuse_nul_characters() -> None:
    """NUL in a query or form value is never meaningful, and PostgreSQL text refuses it.

    Refused here, for every page and route, rather than as a 500 from the first
    query that compares a column with it (a search box, the login form, a slug).
    A path with NUL names nothing: 404, as any unknown resource.
    """
    if "\x00" in request.path:
        raise NotFound()
    values = [*request.args.values()]
    if request.mimetype in FORM_MIMETYPES:
        values.extend(request.form.values())
    if any("\x00" in value for value in values):
        raise BadRequest("NUL characters are not accepted in parameters.")


_DEFAULT_HEADERS = tuple(SECURITY_HEADERS.items())
# Only on HTTPS answers: over plain HTTP the header is ignored, and a wrong one would
# lock browsers out of a site that has no certificate.
_HTTPS_DEFAULT_HEADERS = (
    *_DEFAULT_HEADERS,
    ("Strict-Transport-Security", STRICT_TRANSPORT_SECURITY),
)


def content_security_policy(path: str) -> str:
    """The CSP of every response to ``path`` (it replaces any a view set)."""
    if path.startswith(RELAXED_CSP_PREFIXES):
        return RELAXED_CONTENT_SECURITY_POLICY
    return CONTENT_SECURITY_POLICY


def default_headers(secure: bool) -> tuple[tuple[str, str], ...]:
    """The other security headers of every response, in order, unless a view set its own;
    ``secure``: the request came over HTTPS."""
    return _HTTPS_DEFAULT_HEADERS if secure else _DEFAULT_HEADERS


def _add_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = content_security_policy(request.path)
    for name, value in default_headers(request.is_secure):
        response.headers.setdefault(name, value)
    return response


def trust_proxies(app: Flask, count: int) -> None:
    """Believe the last ``count`` hops of X-Forwarded-For/-Proto/-Host/-Port, no more.

    Then the client's address (login throttling, the loopback check of /metrics)
    and scheme (Secure cookies, redirects, HSTS) are the ones the outermost
    trusted proxy saw. Without proxies (0) the headers are ignored: anyone can
    send them, and believing a forged X-Forwarded-For would let a client pick
    its own address.
    """
    if count > 0:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=count, x_proto=count, x_host=count, x_port=count
        )


def init_app(app: Flask) -> None:
    install_log_redaction()
    trust_proxies(app, int(app.config.get("TRUSTED_PROXY_COUNT") or 0))
    # First of all before-request hooks: nothing (CSRF, rate limits, auth) reads a
    # body that is going to be refused.
    hooks = app.before_request_funcs.setdefault(None, [])
    hooks[0:0] = [lambda: _refuse_oversized_bodies(app), _refuse_nul_characters]
    app.after_request(_add_headers)
