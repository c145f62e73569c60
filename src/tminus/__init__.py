"""tminus: a production deployment plan as one file, checked, rendered and executed safely."""

__all__ = ["__version__"]

__version__ = "0.1.0"


def _without_pydantic_plugins() -> None:
    """Run pydantic without its own plug-ins (docs/architecture.md, "Decisions").

    A pydantic plug-in (found through the ``pydantic`` entry-point group) would see every
    value tminus validates, plan secrets included, and looking for one imports
    ``importlib.metadata`` and ``email`` at every start (~9% of ``tminus check``). tminus's
    own plug-ins are found through its own entry-point groups and are not affected. Must run
    before pydantic builds its first validator; a loader already imported is left as it is.
    """
    import sys
    import types

    loader = types.ModuleType("pydantic.plugin._loader", "tminus: no pydantic plug-ins")
    loader.get_plugins = tuple  # type: ignore[attr-defined]
    sys.modules.setdefault("pydantic.plugin._loader", loader)


_without_pydantic_plugins()
