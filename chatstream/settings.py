"""Per-call settings: declared once, as model fields marked `PerCall`, and resolved once per call.

A field annotated ``Annotated[float | None, PerCall()]`` is a setting of the model that a single
call may override (``model.invoke(x, temperature=0)``); `PerCall` also names it on the wire when
the provider spells it differently. `resolve` merges a model's settings with a call's under one
rule (a per-call value, ``stop`` included, replaces the model's) and is the only place that does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BeforeValidator, TypeAdapter, ValidationError

from .errors import InvalidParameterError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pydantic.fields import FieldInfo

__all__ = ["PerCall", "SettingSpec", "Stop", "as_stop", "resolve", "settings_of"]


@dataclass(frozen=True, slots=True)
class PerCall:
    """Marks a model field as a setting that one call may override.

    Attributes:
        wire: Where the provider's request body takes it, when not under the field's name:
            ``"stop_sequences"``, or a dotted path for a nested place (``"options.top_k"``).
        converted: The provider's ``_to_wire`` converts the value itself (tools in another
            format, a body merged in): it is not copied to the body as it is.
    """

    wire: str | None = None
    converted: bool = False


def as_stop(value: Any) -> Any:
    """``stop`` as a list: a ``str`` is one stop sequence, never its characters."""
    return [value] if isinstance(value, str) else value


Stop = Annotated[list[str] | None, BeforeValidator(as_stop)]
"""The type of every ``stop`` setting: stop sequences, a single string meaning one."""


@dataclass(frozen=True, slots=True)
class SettingSpec:
    """What a model class accepts per call, derived from its fields."""

    names: frozenset[str]
    """The per-call settings."""
    wire: Mapping[str, str]
    """Where each setting that is copied as it is goes in the request body (see `PerCall`)."""
    fields: Mapping[str, FieldInfo]
    """The fields, to validate per-call values against."""
    _adapters: dict[str, TypeAdapter[Any]]

    def validate(self, owner: str, name: str, value: Any) -> Any:
        """``value`` checked (and coerced) as the field ``name`` would be."""
        adapter = self._adapters.get(name)
        if adapter is None:
            field = self.fields[name]
            # The field's own type and metadata (constraints, validators), built at run time.
            annotated: Any = Annotated
            adapter = self._adapters[name] = TypeAdapter(annotated[field.annotation, field])
        try:
            return adapter.validate_python(value)
        except ValidationError as exc:
            problem = exc.errors()[0]["msg"]
            raise InvalidParameterError(
                f"{owner} got {value!r} for {name!r}: {problem}", where=name
            ) from None


def settings_of(fields: Mapping[str, FieldInfo]) -> SettingSpec:
    """The per-call settings among a model class's fields."""
    wire: dict[str, str] = {}
    chosen: dict[str, FieldInfo] = {}
    for name, field in fields.items():
        marker = next((m for m in field.metadata if isinstance(m, PerCall)), None)
        if marker is not None:
            if not marker.converted:
                wire[name] = marker.wire or name
            chosen[name] = field
    return SettingSpec(frozenset(chosen), wire, chosen, {})


def resolve(
    model: object, spec: SettingSpec, stop: Any, params: Mapping[str, Any]
) -> dict[str, Any]:
    """The settings of one call: the model's, with the call's ``stop`` and ``params`` over them.

    Every per-call setting appears (``None`` meaning unset), ``stop`` always. A per-call value
    replaces the model's, ``stop`` included; values are validated as the fields are.

    Raises:
        InvalidParameterError: A parameter the model does not have (the closest name is
            suggested), or a value its field refuses.
    """
    values = model.__dict__  # the fields' values: no attribute lookup per setting
    settings = {name: values[name] for name in spec.names}
    settings.setdefault("stop", None)
    owner = type(model).__name__
    for key, value in params.items():
        if key not in spec.names:
            raise _unknown(owner, key, spec.names)
        settings[key] = value if value is None else spec.validate(owner, key, value)
    if stop is not None:
        settings["stop"] = (
            spec.validate(owner, "stop", stop) if "stop" in spec.names else as_stop(stop)
        )
    return settings


def _unknown(owner: str, key: str, names: frozenset[str]) -> InvalidParameterError:
    import difflib  # only on a typo: `import chatstream` need not load difflib

    close = difflib.get_close_matches(key, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    accepted = ", ".join(sorted(names)) or "none"
    return InvalidParameterError(
        f"{owner} has no per-call parameter {key!r}{hint} (accepted: {accepted})", where=key
    )
