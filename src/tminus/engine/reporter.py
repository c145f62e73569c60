"""What an operator sees while a deploy runs: Rich live progress on a TTY, plain lines
otherwise. Every line has already been masked by the engine."""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol

__all__ = ["PlainReporter", "Reporter", "RichReporter", "make_reporter"]


class Reporter(Protocol):
    #: Nothing is shown (then a step's description is not even made).
    quiet: bool

    def phase(self, index: int, total: int, name: str, estimate_s: float | None) -> None: ...
    def step(self, title: str, detail: str = "") -> None: ...
    def line(self, text: str) -> None: ...
    def result(self, ok: bool, text: str) -> None: ...
    def close(self) -> None: ...


def _fmt(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"


class PlainReporter:
    def __init__(self, stream: Any = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stdout
        self.quiet = quiet

    def _w(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    def phase(self, index: int, total: int, name: str, estimate_s: float | None) -> None:
        est = f" (estimate {_fmt(estimate_s)})" if estimate_s else ""
        self._w(f"== phase {index + 1}/{total}: {name}{est}")

    def step(self, title: str, detail: str = "") -> None:
        self._w(f"-> {title}" + (f"  {detail}" if detail else ""))

    def line(self, text: str) -> None:
        self._w(f"   {text}")

    def result(self, ok: bool, text: str) -> None:
        self._w(("   ok: " if ok else "   FAILED: ") + text)

    def close(self) -> None:
        return None


class RichReporter:
    """Live progress: the current phase and step with elapsed time against the estimate."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        self._Text = Text
        self.quiet = False
        self.console = Console()
        self.phase_name = ""
        self.phase_index = (0, 0)
        self.estimate: float | None = None
        self.phase_start = time.monotonic()
        self.current = ""
        self.live = Live(
            self._render(),
            console=self.console,
            refresh_per_second=4,
            transient=True,
            get_renderable=self._render,
        )
        self.live.start()

    def _render(self) -> Any:
        elapsed = time.monotonic() - self.phase_start
        est = f" / {_fmt(self.estimate)}" if self.estimate else ""
        over = self.estimate is not None and elapsed > self.estimate
        style = "bold red" if over else "bold cyan"
        t = self._Text()
        if self.phase_name:
            i, n = self.phase_index
            t.append(f"phase {i + 1}/{n} {self.phase_name} ", style="bold")
            t.append(f"[{_fmt(elapsed)}{est}]", style=style)
            if self.current:
                t.append(f"  ▸ {self.current}")
        return t

    def phase(self, index: int, total: int, name: str, estimate_s: float | None) -> None:
        self.phase_name, self.phase_index, self.estimate = name, (index, total), estimate_s
        self.phase_start = time.monotonic()
        est = f" (estimate {_fmt(estimate_s)})" if estimate_s else ""
        self.console.print(self._Text(f"== phase {index + 1}/{total}: {name}{est}", style="bold"))

    def step(self, title: str, detail: str = "") -> None:
        self.current = title
        t = self._Text("-> ", style="cyan")
        t.append(title)
        if detail:
            t.append(f"  {detail}", style="dim")
        self.console.print(t)

    def line(self, text: str) -> None:
        self.console.print(self._Text("   " + text, style="dim"))

    def result(self, ok: bool, text: str) -> None:
        if ok:
            self.console.print(self._Text("   ok: " + text, style="green"))
        else:
            self.console.print(self._Text("   FAILED: " + text, style="bold red"))

    def close(self) -> None:
        self.live.stop()


def make_reporter(quiet: bool = False) -> Reporter:
    if not quiet and sys.stdout.isatty():
        return RichReporter()
    return PlainReporter(quiet=quiet)
