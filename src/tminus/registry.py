"""The one registry helper of every plug-in family (step kinds, check sources, routers, flag
stores, backup drivers).

A :class:`Registry` maps a name (a ``kind:`` or ``source:`` value) to the object that
implements it: built-ins by ``"module:attribute"`` (imported on first use, so a command
imports only the plug-ins it uses), then, for the families whose plan union is open (step kinds
and check sources), third-party ones from an entry-point group, scanned the first time a name
that is not built in is asked for. It never guesses: an unknown name raises :class:`Unknown`,
which each family turns into its own error with the known names as the hint.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module
from typing import Generic, TypeVar

__all__ = ["Registry", "Unknown"]

T = TypeVar("T")


class Unknown(LookupError):
    """No implementation of ``name`` in this family: ``known`` are the names there are."""

    def __init__(self, family: str, name: str, known: list[str]) -> None:
        super().__init__(f"{family} '{name}' is not implemented in this version of tminus")
        self.family = family
        self.name = name
        self.known = known

    @property
    def hint(self) -> str:
        return "implemented: " + ", ".join(self.known)


class Registry(Generic[T]):
    """``family`` names the plug-ins in messages; ``builtins`` maps a name to
    ``module:attribute`` (``attribute`` defaults to ``default_attr``); ``group`` is the
    entry-point group of third-party plug-ins, None where the plan does not accept them."""

    def __init__(
        self,
        family: str,
        builtins: Mapping[str, str],
        *,
        group: str | None = None,
        default_attr: str = "KIND",
    ) -> None:
        self.family = family
        self.builtins = builtins
        self.group = group
        self.default_attr = default_attr
        self._cache: dict[str, T] = {}
        self._third_party: dict[str, str] | None = None

    def third_party(self) -> dict[str, str]:
        """name → ``module:attribute`` of the installed third-party plug-ins."""
        if self._third_party is None:
            found: dict[str, str] = {}
            if self.group is not None:
                from importlib.metadata import entry_points

                for ep in entry_points(group=self.group):
                    if ep.name not in self.builtins:  # a built-in wins
                        found[ep.name] = ep.value
            self._third_party = found
        return self._third_party

    def names(self) -> list[str]:
        """Every name this family implements (built-ins first)."""
        return [*self.builtins, *sorted(set(self.third_party()) - set(self.builtins))]

    def get(self, name: str) -> T:
        """The implementation of ``name`` (loaded once); :class:`Unknown` if there is none."""
        if name in self._cache:
            return self._cache[name]
        target = self.builtins.get(name)
        if target is None:
            target = self.third_party().get(name)
        if target is None:
            raise Unknown(self.family, name, self.names())
        module, _, attr = target.partition(":")
        impl: T = getattr(import_module(module), attr or self.default_attr)
        self._cache[name] = impl
        return impl
