"""Custom search attributes: what makes windflow runs findable in the Temporal Web UI."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

KIND = SearchAttributeKey.for_keyword("WindflowKind")
STATUS = SearchAttributeKey.for_keyword("WindflowStatus")
SERVICES = SearchAttributeKey.for_keyword_list("WindflowServices")
SERVICE = SearchAttributeKey.for_keyword("WindflowService")
STATE = SearchAttributeKey.for_keyword("WindflowState")
ACTOR = SearchAttributeKey.for_keyword("WindflowActor")

ALL_KEYS = [KIND, STATUS, SERVICES, SERVICE, STATE, ACTOR]


def cli_flags() -> list[str]:
    """``--search-attribute Name=Type`` flags for ``temporal server start-dev``."""
    kinds = {"KEYWORD": "Keyword", "KEYWORD_LIST": "KeywordList", "INT": "Int", "TEXT": "Text", "BOOL": "Bool"}
    out: list[str] = []
    for key in ALL_KEYS:
        out += ["--search-attribute", f"{key.name}={kinds[key.indexed_value_type.name]}"]
    return out
