"""Keep API keys out of error messages, events and logs."""

from __future__ import annotations

import os
import re

# OpenAI-style keys and bearer tokens; other providers' env keys are added below.
_PATTERNS = [
    re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]{6,}"),
    re.compile(r"(?i)(api[_-]?key['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]{6,}"),
]
_KEY_ENV = re.compile(r"(?i)(api_?key|token|secret)")


def redact(text: str) -> str:
    """Return `text` with API keys and bearer tokens replaced by '***'."""
    for name, value in os.environ.items():
        if value and len(value) >= 8 and _KEY_ENV.search(name) and value in text:
            text = text.replace(value, "***")
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "***", text)
    return text


def describe_error(exc: BaseException) -> str:
    """One line naming the error type and its message, with secrets removed."""
    message = " ".join(str(exc).split()) or repr(exc)
    return redact(f"{type(exc).__name__}: {message}")
