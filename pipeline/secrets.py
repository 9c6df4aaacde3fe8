"""Passwords in the URLs a user gives (flags, config, ``MLFLOW_TRACKING_URI``,
``MLFLOW_REGISTRY_URI``, ``CELLSTUDY_STORAGE``) are never shown: the CLI registers each with
``hide`` as soon as it knows it, and everything the process prints (``MaskedStream`` on stdout
and stderr, so logs, warnings, tracebacks and driver errors alike) and every param, tag and text
it logs to MLflow goes through ``mask``. Standard library only: any module may use it.

    >>> hide("postgresql://u:pw@db/optuna")
    >>> mask("could not connect with password pw")
    'could not connect with password ***'
"""

from __future__ import annotations

import os
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit

ENV_URLS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "CELLSTUDY_STORAGE")
"""Environment variables whose URLs may carry a password."""

_hidden: set[str] = set()


def password(url: str) -> str | None:
    """The password of ``url``, or None (also for text that is no URL)."""
    try:
        return urlsplit(url).password or None
    except ValueError:
        return None


def hide(*urls: Any) -> None:
    """Registers the passwords of ``urls`` (non-strings and URLs without one are skipped), as
    given and percent-decoded: drivers quote either form in their errors."""
    for url in urls:
        if isinstance(url, str) and (secret := password(url)):
            _hidden.update(s for s in (secret, unquote(secret)) if s)


def hide_environment() -> None:
    """Registers the passwords of the store URLs in the environment (ENV_URLS)."""
    hide(*(os.environ.get(name) for name in ENV_URLS))


def mask(text: str) -> str:
    """``text`` with every registered secret replaced by ``***`` (longest first, so that a
    secret inside another is not left half-shown)."""
    for secret in sorted(_hidden, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def mask_url(url: str) -> str:
    """The URL with its own password (registered or not) replaced by ``***``."""
    secret = password(url)
    return url.replace(f":{secret}@", ":***@") if secret else mask(url)


class MaskedStream:
    """A text stream that masks what is written to it; anything else goes to ``stream``.

    Installed as ``sys.stdout`` and ``sys.stderr`` before logging is set up, so the handlers
    of every logger (MLflow's own included) write through it."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(mask(text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)
