"""Credentials never leave the process: not into the manifest, transcripts, logs or errors."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

MASK = "***"


def redact_url(url: str | None) -> str | None:
    """``url`` with any user:password part masked (http://u:p@host/v1 -> http://***@host/v1)."""
    if not url or "@" not in url:
        return url
    parts = urlsplit(url)
    if not (parts.username or parts.password):
        return url
    return urlunsplit(parts._replace(netloc=f"{MASK}@{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"))


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every non-empty secret in ``secrets`` masked (e.g. a server echoing the key)."""
    for s in secrets:
        if s:
            text = text.replace(s, MASK)
    return text
