"""The ``alembic`` tool of ``kind: migrate``: alembic through its Python API (imported on first
use), with ``sqlalchemy.url`` set from the target and alembic's log lines sent to the step's
log."""

from __future__ import annotations

import contextlib
import io
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tminus.steps._migrate_tool import Log, MigrateError, _in_thread, _shown

__all__ = ["Alembic"]


# --- alembic ---------------------------------------------------------------------------------
class _CaptureAlembicLog(logging.Filter):
    """Forwards alembic's log records emitted by one thread to the step's log. A logger filter,
    not a handler: ``logging.config.fileConfig`` in env.py drops handlers but keeps filters."""

    def __init__(self, log: Log) -> None:
        super().__init__()
        self.log = log
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread == self.thread:
            with contextlib.suppress(Exception):
                self.log(record.getMessage())
        return True


_ALEMBIC_LOGGERS = ("alembic.runtime.migration", "alembic.env", "alembic")


@contextlib.contextmanager
def _alembic_logging(log: Log) -> Iterator[None]:
    """Capture alembic's log lines; afterwards put the process's logging back as it was
    (env.py usually calls ``fileConfig``, which reconfigures every logger)."""
    manager = logging.Logger.manager
    root = logging.getLogger()
    saved_root = (root.level, list(root.handlers), list(root.filters))
    saved: dict[str, tuple[int, list[logging.Handler], list[Any], bool, bool]] = {}
    for name, lg in list(manager.loggerDict.items()):
        if isinstance(lg, logging.Logger):
            saved[name] = (lg.level, list(lg.handlers), list(lg.filters), lg.propagate, lg.disabled)
    capture = _CaptureAlembicLog(log)
    loggers = [logging.getLogger(n) for n in _ALEMBIC_LOGGERS]
    migration_logger = loggers[0]
    migration_logger.setLevel(logging.INFO)
    for lg in loggers:
        lg.addFilter(capture)
    try:
        yield
    finally:
        root.setLevel(saved_root[0])
        root.handlers[:] = saved_root[1]
        root.filters[:] = saved_root[2]
        for name, lg in list(manager.loggerDict.items()):
            if not isinstance(lg, logging.Logger):
                continue
            if name in saved:
                level, handlers, filters, propagate, disabled = saved[name]
                lg.setLevel(level)
                lg.handlers[:] = handlers
                lg.filters[:] = filters
                lg.propagate, lg.disabled = propagate, disabled
            else:  # created by env.py or alembic during the run
                lg.filters[:] = [f for f in lg.filters if f is not capture]


class Alembic:
    """alembic through its Python API, with ``sqlalchemy.url`` set from the target."""

    def __init__(self, config: Path, url: str, log: Log, revision: str = "head") -> None:
        self.config_path = config
        self.url = url
        self.log = log
        self.revision = revision

    async def current(self) -> str | None:
        return await _in_thread(self.read_current)

    async def up(self) -> None:
        await _in_thread(self.upgrade, self.revision)

    async def down_to(self, target: Any) -> None:
        await _in_thread(self.downgrade_to, None if target is None else str(target))

    def _config(self) -> Any:
        from alembic.config import Config

        if not self.config_path.is_file():
            raise MigrateError(f"alembic config {self.config_path} does not exist")
        out = io.StringIO()
        cfg = Config(str(self.config_path), stdout=out)
        # ConfigParser interpolation: a literal % is written %%.
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        cfg.attributes["configure_logger"] = False  # honoured by env.py files that check it
        cfg.attributes["tminus_stdout"] = out
        return cfg

    def _flush(self, cfg: Any) -> None:
        for line in cfg.attributes["tminus_stdout"].getvalue().splitlines():
            self.log(line)

    def read_current(self) -> str | None:
        """The current revision(s), read through env.py (its URL, version table and schema)."""
        from alembic.runtime.environment import EnvironmentContext
        from alembic.script import ScriptDirectory

        cfg = self._config()
        script = ScriptDirectory.from_config(cfg)
        heads: list[str] = []
        called = False

        def fn(rev: Any, context: Any) -> list[Any]:
            nonlocal called
            called = True
            heads.extend(context.get_current_heads())
            return []

        with (
            _alembic_logging(lambda _line: None),
            EnvironmentContext(cfg, script, fn=fn, dont_mutate=True),
        ):
            script.run_env()
        if not called:
            raise MigrateError(
                f"the env.py of {self.config_path} did not run migrations online; "
                "cannot read the current revision"
            )
        return ",".join(sorted(heads)) or None

    def upgrade(self, revision: str) -> None:
        from alembic import command

        cfg = self._config()
        with _alembic_logging(self.log):
            command.upgrade(cfg, revision)
        self._flush(cfg)

    def downgrade_to(self, before: str | None) -> None:
        from alembic import command

        now = self.read_current()
        if now == before:
            self.log(f"already at revision {_shown(before)}: nothing to undo")
            return
        if before is not None and "," in before:
            raise MigrateError(
                f"alembic had several heads before the migration ({before}); "
                "downgrade to them by hand"
            )
        cfg = self._config()
        with _alembic_logging(self.log):
            command.downgrade(cfg, before or "base")
        self._flush(cfg)
