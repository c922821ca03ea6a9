"""Custom search attributes: what makes windflow runs findable in the Temporal Web UI.

The engine limits the size of one value (Temporal's ``limit.searchAttributesSizeOfValue``, 2 KiB by default)
and of all of a run's values together; a workflow task that breaks a limit fails, and the server then ends
the run. So every value windflow writes is bounded whatever the size of the system: lists through
``bounded_keywords``, with the full count beside them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from temporalio.common import SearchAttributeKey

KIND = SearchAttributeKey.for_keyword("WindflowKind")
STATUS = SearchAttributeKey.for_keyword("WindflowStatus")
SERVICES = SearchAttributeKey.for_keyword_list("WindflowServices")
SERVICE_COUNT = SearchAttributeKey.for_int("WindflowServiceCount")
SERVICE = SearchAttributeKey.for_keyword("WindflowService")
STATE = SearchAttributeKey.for_keyword("WindflowState")
ACTOR = SearchAttributeKey.for_keyword("WindflowActor")

ALL_KEYS: list[SearchAttributeKey[Any]] = [KIND, STATUS, SERVICES, SERVICE_COUNT, SERVICE, STATE, ACTOR]

#: the most JSON bytes one keyword-list value may take: half the engine's default limit, so a namespace with a
#: lower limit, and the payload's own metadata, still fit
LIST_VALUE_BUDGET = 1024


def bounded_keywords(values: Iterable[str], budget: int = LIST_VALUE_BUDGET) -> list[str]:
    """The first ``values`` whose JSON list stays within ``budget`` bytes (in order; the rest left out)."""
    out: list[str] = []
    size = 2  # []
    for value in values:
        add = len(json.dumps(value).encode()) + (2 if out else 0)  # ", " between values
        if size + add > budget:
            break
        out.append(value)
        size += add
    return out


def cli_flags() -> list[str]:
    """``--search-attribute Name=Type`` flags for ``temporal server start-dev``."""
    kinds = {"KEYWORD": "Keyword", "KEYWORD_LIST": "KeywordList", "INT": "Int", "TEXT": "Text", "BOOL": "Bool"}
    out: list[str] = []
    for key in ALL_KEYS:
        out += ["--search-attribute", f"{key.name}={kinds[key.indexed_value_type.name]}"]
    return out
