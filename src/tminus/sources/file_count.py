"""``source: file_count``: how many files match ``pattern`` under a path (or path target)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from tminus.plan.checks import FileCountCheck
from tminus.sources.base import CheckContext, Measurement

__all__ = ["SOURCE", "FileCountSource"]


class FileCountSource:
    source: ClassVar[str] = "file_count"

    async def measure(self, check: FileCountCheck, ctx: CheckContext) -> Measurement:
        target = ctx.plan.targets.paths.get(check.path)
        raw = target.path if target else check.path
        root = Path(ctx.resolver.resolve(raw)).expanduser()
        if not root.exists():
            return Measurement(value=0, message=f"{root} does not exist")
        if root.is_file():
            return Measurement(value=1, message=f"{root} is a file")
        it = root.rglob(check.pattern) if check.recursive else root.glob(check.pattern)
        count = sum(1 for p in it if p.is_file())
        return Measurement(value=count, message=f"{count} file(s) matching {check.pattern}")


SOURCE = FileCountSource()
