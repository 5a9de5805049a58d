"""The text of a chat message or of message content, whatever shape it has."""

from __future__ import annotations

from typing import Any


def content_text(content: Any) -> str:
    """Text of message content: a string, or a list of parts (strings or {"text": ...}).

    Parts are joined with a space, so words of adjacent parts never run together.
    """
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return " ".join(parts)
    return "" if content is None else str(content)


def message_text(message: Any) -> str:
    """Text of a chat message (LangChain message, OpenAI-style dict, or bare content)."""
    if isinstance(message, dict):
        return content_text(message.get("content"))
    content = getattr(message, "content", message)
    if isinstance(content, str):
        return content
    text = getattr(message, "text", None)
    if isinstance(text, str):
        return text
    return content_text(content)
