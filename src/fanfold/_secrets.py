"""Keep API keys, passwords and auth headers out of error messages, events and logs.

The one place for redaction: `redact` for free text, `mask_url` for a URL shown to
the user, `strip_password` for a URL kept in state or a checkpoint.
"""

from __future__ import annotations

import base64
import os
import re
from urllib.parse import parse_qsl, urlencode, urlsplit

# OpenAI-style keys, bearer and basic credentials, key=value pairs, URL userinfo.
_PATTERNS = [
    re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]{6,}"),
    re.compile(r"(?i)(api[_-]?key['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]{6,}"),
    re.compile(r"(?i)(\bpassword['\"]?\s*[:=]\s*['\"]?)[^\s'\",}&]+"),
    # scheme://user:password@host: the password goes, the user stays.
    re.compile(r"(?i)(\b[a-z][a-z0-9+.\-]*://[^\s:/?#@'\"]*:)[^\s/?#@'\"]+(?=@)"),
]
# `Basic <base64 of user:password>`; plain words after "basic" are left alone.
_BASIC = re.compile(r"(?i)(\bbasic\s+)([A-Za-z0-9+/]{4,}={0,2})(?![A-Za-z0-9+/=])")
_KEY_ENV = re.compile(r"(?i)(api_?key|token|secret|password)")
_PASSWORD_PARAMS = {"password", "passwd", "pass", "sslpassword"}
MASK = "***"


def redact(text: str) -> str:
    """Return `text` with API keys, auth headers and URL passwords replaced by '***'."""
    for name, value in os.environ.items():
        if value and len(value) >= 8 and _KEY_ENV.search(name) and value in text:
            text = text.replace(value, MASK)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + MASK, text)
    return _BASIC.sub(_basic_credentials, text)


def _basic_credentials(match: re.Match[str]) -> str:
    try:
        decoded = base64.b64decode(match.group(2), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return match.group(0)
    return match.group(1) + MASK if ":" in decoded else match.group(0)


def describe_error(exc: BaseException) -> str:
    """One line naming the error type and its message, with secrets removed."""
    message = " ".join(str(exc).split()) or repr(exc)
    return redact(f"{type(exc).__name__}: {message}")


def _without_password(url: str, replacement: str | None) -> str:
    """`url` with its password (userinfo and query) replaced, or removed when None."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return f"{url.split(':', 1)[0]}://(unparsable URL)" if "://" in url else url
    if not parts.scheme or not parts.netloc:
        return url
    netloc = parts.netloc
    if password is not None:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        kept = f"{user}:{replacement}" if replacement is not None else user
        netloc = f"{kept}@{host}" if kept else host
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in _PASSWORD_PARAMS for k, _ in pairs):
            kept_pairs = [
                (k, replacement) if k.lower() in _PASSWORD_PARAMS else (k, v)
                for k, v in pairs
                if replacement is not None or k.lower() not in _PASSWORD_PARAMS
            ]
            query = urlencode(kept_pairs, safe="*")
    return parts._replace(netloc=netloc, query=query).geturl()


def mask_url(url: str) -> str:
    """A URL fit to print: its password, if any, shown as '***' (parsed, never searched)."""
    return _without_password(url, MASK)


def strip_password(url: str) -> str:
    """A URL fit to store: its password, if any, removed.

    The driver reads the password again from the environment (PGPASSWORD, ~/.pgpass)
    or from a URL given again at resume.
    """
    return _without_password(url, None)
