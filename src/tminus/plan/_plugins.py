"""Plug-in members of the plan's open unions: the step kinds (``kind:``) and check sources
(``source:``) of installed packages.

A union such as the step union has one member per built-in value and one member for every
plug-in value: its discriminator (:meth:`PluginModels.tag`) gives a built-in value its own
tag, an installed plug-in's value the union's plug-in tag, and anything else itself (which the
union reports as unknown, with the known values). The plug-in member validates with the model
registered for that value in the entry-point group (:meth:`PluginModels.validate`). Plug-ins
are looked up the first time a value that is not built in is met, once per process, so a plan
of built-in values never scans the installed packages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel

__all__ = ["PluginModels"]


class PluginModels:
    """The plug-in models of one union: ``group`` (entry points: name = the value, object =
    the model), the discriminating ``field`` (``kind``/``source``), the models' common
    ``base`` and the built-in values."""

    def __init__(
        self,
        *,
        group: str,
        field: str,
        base: type[BaseModel],
        builtins: Mapping[str, type[BaseModel]],
        tag: str,
        namespace: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.group = group
        self.field = field
        self.base = base
        self.builtins = builtins
        #: The union's tag for every plug-in value (never written in a plan).
        self.tag_name = tag
        #: Names a plug-in model's inherited annotations need (the step union for ``undo``).
        self._namespace = namespace
        self._found: dict[str, type[BaseModel] | str] | None = None

    def installed(self) -> dict[str, type[BaseModel] | str]:
        """value → model of every installed plug-in (or, for one that cannot be used, why)."""
        if self._found is None:
            from importlib.metadata import entry_points

            found: dict[str, type[BaseModel] | str] = {}
            for ep in entry_points(group=self.group):
                if ep.name not in self.builtins:  # a built-in value wins
                    found[ep.name] = self._load(ep.name, ep.value, ep.load)
            self._found = found
        return self._found

    def _load(self, name: str, where: str, load: Callable[[], Any]) -> type[BaseModel] | str:
        what = f"{self.field} '{name}'"
        try:
            model = load()
        except Exception as exc:  # a broken plug-in is a plan problem, not a traceback
            return f"the plug-in model {where} of {what} failed to load: {exc!r}"
        if not (isinstance(model, type) and issubclass(model, self.base)):
            return f"{where} ({what}) is not a subclass of {self.base.__qualname__}"
        declared = model.model_fields.get(self.field)
        if declared is None or getattr(declared.annotation, "__args__", None) != (name,):
            return f"{where} must declare {self.field}: Literal[{name!r}] (its entry point's name)"
        model.model_rebuild(_types_namespace=self._namespace() if self._namespace else None)
        return model

    def json_schema(self, what: str) -> dict[str, Any]:
        """The JSON Schema of the plug-in member (``tminus schema``): any mapping with the
        discriminating field; the plug-in's model checks the rest."""
        return {
            "type": "object",
            "description": f"A {what} from an installed plug-in (entry-point group "
            f"{self.group}); `tminus check` validates it with the plug-in's model.",
            "properties": {self.field: {"type": "string"}},
            "required": [self.field],
        }

    def model(self, value: str) -> type[BaseModel] | None:
        """The model of ``value``: built in, else an installed plug-in's, else None."""
        if value in self.builtins:
            return self.builtins[value]
        model = self.installed().get(value)
        return model if isinstance(model, type) else None

    def _value(self, data: Any) -> Any:
        return data.get(self.field) if isinstance(data, dict) else getattr(data, self.field, None)

    def tag(self, data: Any) -> str | None:
        """The union's discriminator."""
        value = self._value(data)
        if not isinstance(value, str) or value in self.builtins:
            return value  # type: ignore[no-any-return]
        return self.tag_name if value in self.installed() else value

    def validate(self, data: Any) -> BaseModel:
        """The plug-in member's validator: the plug-in's model, or why it cannot be used."""
        model = self.installed()[str(self._value(data))]
        if isinstance(model, str):
            raise ValueError(model)
        return data if isinstance(data, model) else model.model_validate(data)
