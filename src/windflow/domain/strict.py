"""Strict scalars for models that read what people and programs send (request bodies, system files).

pydantic's lax mode turns ``true`` into ``1`` for a number field and ``1`` or ``"yes"`` into ``True`` for a flag:
``{"timeout": true}`` would become a one-second timeout. :class:`StrictScalars` refuses both while keeping the
conversions that matter (an int where a float is expected, ``"2s"`` where a duration is expected). One check per
model (not one per field), on the keys that name a number-only or a flag-only field.
"""

from __future__ import annotations

import types
import typing
from typing import Any, ClassVar

from pydantic import BaseModel, model_validator
from pydantic_core import PydanticCustomError

_NUMBER = "number"
_FLAG = "flag"
_KINDS: dict[type, dict[str, str]] = {}


def _scalars(annotation: Any) -> set[type]:
    """The scalar types an annotation admits (``int | None`` → {int}; a model or a list: none of ours)."""
    if annotation in (int, float, bool, str, bytes):
        return {annotation}
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _scalars(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        found: set[type] = set()
        for arg in typing.get_args(annotation):
            found |= _scalars(arg)
        return found
    if origin is typing.Literal:
        return {type(arg) for arg in typing.get_args(annotation)}
    return {object} if annotation not in (type(None), None) else set()


def _kinds(model: type[BaseModel]) -> dict[str, str]:
    kinds = _KINDS.get(model)
    if kinds is None:
        kinds = {}
        for name, field in model.model_fields.items():
            admitted = _scalars(field.annotation)
            kind = None
            if admitted and admitted <= {int, float}:
                kind = _NUMBER
            elif admitted == {bool}:
                kind = _FLAG
            if kind is not None:
                kinds[name] = kind
                if field.alias and field.alias != name:
                    kinds[field.alias] = kind
        _KINDS[model] = kinds
    return kinds


class StrictScalars(BaseModel):
    """Numbers are numbers (not ``true``), flags are ``true``/``false`` (not ``1`` or ``"yes"``)."""

    strict_scalars: ClassVar[bool] = True

    @model_validator(mode="before")
    @classmethod
    def _strict_scalars(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for key, kind in _kinds(cls).items():
            if key not in data:
                continue
            value = data[key]
            if kind == _NUMBER and isinstance(value, bool):
                raise PydanticCustomError(
                    "number_type",
                    "{field}: a number is expected, not {value}",
                    {"field": key, "value": "true" if value else "false"},
                )
            if kind == _FLAG and value is not None and not isinstance(value, bool):
                raise PydanticCustomError("bool_type", "{field}: true or false is expected", {"field": key})
        return data
