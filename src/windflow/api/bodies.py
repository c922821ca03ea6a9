"""The base of every request body: unknown keys are errors and scalars are typed.

A misspelt or unsupported key (``{"services": [...]}`` for ``components``) must not be silently dropped and the
request run as if it had not been sent; ``{"timeout": true}`` must not become one second. 422 names the key.
"""

from __future__ import annotations

from pydantic import ConfigDict

from windflow.domain.strict import StrictScalars

VERSION_MAX = 2**31 - 1
"""Largest config version number (the store's integer column)."""


class RequestBody(StrictScalars):
    model_config = ConfigDict(extra="forbid")
