"""``kind: upload``: copy a local file or directory to every host of a group, skipping what
has not changed.

Per host, at most two commands on the host's one connection:

1. the manifest (``sha256sum -c`` format) goes to ``sha256sum -c --quiet`` on the host, which
   prints only the files that differ or are missing (and ``mode``, if given, is applied to the
   files already there);
2. if anything differs: a tar stream of those files (built once per distinct set, shared by
   every host) is unpacked into a staging directory beside them, checked against its
   manifest, and each file is renamed into place (so a reader never sees half a file): one
   ``mkdir -p`` and one ``mv -f -t DIR`` per directory, written out on the client from the
   file list (a host starts about 6 + directories processes, not one per file).

A second run of an unchanged tree sends no file. Needs ``sh``, ``tar``, ``sha256sum``,
``mktemp``, GNU ``mv`` (``-t``) and, for trees too large to name on one command line,
``find`` on the host (GNU coreutils, any Linux).
"""

from __future__ import annotations

import asyncio
import posixpath
import shlex
from pathlib import Path
from typing import Any, ClassVar

from tminus.hosts.base import Host
from tminus.hosts.tree import LocalTree, file_tree, scan_tree
from tminus.plan.interpolate import ResolveError, Resolver
from tminus.plan.model import Plan
from tminus.plan.paths import dotdot_problem
from tminus.plan.steps import UploadStep
from tminus.steps import _fleet
from tminus.steps._fleet import HostResult, tail
from tminus.steps.base import Compensation, StepContext, StepKindBase, StepOutcome

__all__ = [
    "KIND",
    "LEAN_LIMIT",
    "UploadKind",
    "check_script",
    "confined_problem",
    "parse_changed",
    "put_script",
]


_ABSENT = "tminus-absent"
_DONE = "tminus-uploaded"


def check_script(base: str, mode: str | None) -> str:
    """Reads a manifest on stdin; prints the files that differ (nothing when all match)."""
    d = shlex.quote(base)
    chmod = (
        f"cut -c67- \"$m\" | tr '\\n' '\\0' | xargs -0 -r chmod {shlex.quote(mode)} -- "
        "2>/dev/null\n"
        if mode
        else ""
    )
    absent = f"if ! cd -- {d} 2>/dev/null; then echo {_ABSENT}; cat >/dev/null; exit 0; fi\n"
    if not mode:  # the manifest is read once: straight from stdin, no temporary copy
        return absent + "sha256sum -c --quiet - 2>/dev/null\nexit 0\n"
    return (
        absent + 'm=$(mktemp) || exit 1\ntrap \'rm -f -- "$m"\' EXIT\ncat > "$m"\n'
        f"{chmod}"
        'sha256sum -c --quiet -- "$m" 2>/dev/null\nexit 0\n'
    )


#: The lean put script names every directory and file it moves; past this length (the whole
#: script must fit in one ``sh -c`` argument, 128 KiB on Linux) the generic one is used.
LEAN_LIMIT = 64 * 1024


def _put_head(base: str) -> list[str]:
    """Unpack the stream into a temporary directory beside the files and check it."""
    return [
        "set -e",
        f"D={shlex.quote(base)}",
        '[ -d "$D" ] || mkdir -p -- "$D"',
        'T=$(mktemp -d "$D/.tminus-upload-XXXXXX")',
        "trap 'rm -rf -- \"$T\"' EXIT",
        'tar -x -p --no-same-owner -f - -C "$T"',
        'cd -- "$T"',
        "if ! sha256sum --quiet -c .tminus-sha256 >&2; then",
        "  echo 'tminus: checksum mismatch after the transfer' >&2; exit 4",
        "fi",
    ]


def put_script(base: str, tree: LocalTree | None = None, rels: set[str] | None = None) -> str:
    """Reads a tar stream on stdin: unpack beside the files, verify, rename into place.

    With ``tree`` (and ``rels``, the files sent; None: all), the moves are written out on the
    client (:func:`_lean_moves`): a directory the host does not have yet is renamed into
    place whole, with everything in it; into each directory it has, one ``mv -f -t DIR``
    renames the files sent and the new directories (each file still renamed into place by
    ``rename(2)``, after the manifest was checked). A first upload is one ``mv``; the host
    starts at most ``5 + directories`` processes instead of one ``mv`` per file. A tree too
    large for one command line falls back to the generic script, which finds the files on
    the host."""
    head = _put_head(base)
    if tree is not None:
        lean = _lean_moves(tree, rels)
        if lean is not None:
            return "\n".join([*head, *lean, f"echo {_DONE}"]) + "\n"
    return (
        "\n".join(
            [
                *head,
                "rm -f .tminus-sha256",
                "find . -mindepth 1 -type d -exec sh -c "
                '\'for d; do mkdir -p -- "$0/$d" || exit 1; done\' "$D" {} +',
                "find . ! -type d -exec sh -c "
                '\'for f; do mv -f -- "$f" "$0/$f" || exit 1; done\' "$D" {} +',
                f"echo {_DONE}",
            ]
        )
        + "\n"
    )


def _lean_moves(tree: LocalTree, rels: set[str] | None) -> list[str] | None:
    """The moves, or None when the lines would be too long for one command. A shell flag
    ``n<k>`` per directory of the tar: the host does not have it. Then, for each directory the
    host has, one ``mv -f -t`` of its files and of its new subdirectories (renamed whole: the
    directories and files inside a new one, new too, go with it). A new directory keeps the
    mode the tar gives it (the source's, 0755 in a partial upload), as the release step's
    directories do."""
    q = shlex.quote
    if rels is not None and len(rels) == len(tree.files):
        rels = None  # the whole tree, links included (as tree.tar sends it)
    names = [f.rel for f in tree.files if rels is None or f.rel in rels]
    if rels is None:
        names += [rel for rel, _ in tree.links]
    by_dir: dict[str, list[str]] = {}
    for rel in names:
        by_dir.setdefault(posixpath.dirname(rel), []).append(rel)
    dirs = tree.tar_dirs(rels)
    index = {d: k for k, d in enumerate(dirs)}
    children: dict[str, list[str]] = {}
    lines: list[str] = []
    for k, d in enumerate(dirs):
        parent = posixpath.dirname(d)
        if parent and parent not in index:
            return None  # not a tree the tar writes: the generic script copes
        children.setdefault(parent, []).append(d)
        lines.append(f'[ -e "$D"/{q(d)} ] || [ -L "$D"/{q(d)} ] || n{k}=1')
    for d in ["", *dirs]:
        files, new = by_dir.get(d, []), children.get(d, [])
        if not files and not new:
            continue
        where = f'"$D"/{q(d)}' if d else '"$D"'
        body = [
            "set --" + "".join(f" {q(r)}" for r in files),
            *(f'[ -z "$n{index[c]}" ] || set -- "$@" {q(c)}' for c in new),
            f'[ $# -eq 0 ] || mv -f -t {where} -- "$@"',
        ]
        if d:
            lines.append(f'if [ -z "$n{index[d]}" ]; then')
            lines += ["  " + b for b in body]
            lines.append("fi")
        else:
            lines += body
    if sum(len(ln) + 1 for ln in lines) > LEAN_LIMIT:
        return None
    return lines


def parse_changed(stdout: str, tree: LocalTree) -> set[str] | None:
    """The files ``sha256sum -c --quiet`` reported (None: the directory is absent, so all)."""
    lines = stdout.splitlines()
    if lines and lines[0].strip() == _ABSENT:
        return None
    known = {f.rel for f in tree.files}
    out: set[str] = set()
    for line in lines:
        name, sep, _ = line.rpartition(": FAILED")
        if not sep:
            continue
        rel = name[2:] if name.startswith("./") else name
        if rel in known:
            out.add(rel)
    return out


def confined_problem(step: Any, ctx: StepContext, value: str, what: str) -> str | None:
    """Before any host is touched: the first host of the step's group for which ``value``
    (a path on the host) resolves with a ``..`` component. A host whose value cannot be
    resolved is left to the step (it fails that host)."""
    fleet = ctx.services.fleet
    for name in sorted(fleet.names(_fleet.target(step, ctx)), key=_fleet.natural_key):
        r = _fleet.scoped(ctx.resolver, host=name, host_address=fleet.address(name))
        try:
            resolved = r.resolve(value)
        except ResolveError:
            continue
        bad = dotdot_problem(resolved, what)
        if bad:
            return f"{bad} (on host {name}); nothing was changed"
        if "${" not in value:
            break  # the same on every host
    return None


class _Source:
    """The local side of an upload: a directory tree (scanned once), or one file whose name
    on the host depends on the host's ``dest`` (one small tree per distinct name)."""

    def __init__(self, src: str) -> None:
        self.src = src
        local = Path(src)
        self.tree: LocalTree | None = None
        self.file: Path | None = None
        self._files: dict[str, LocalTree] = {}
        if local.is_dir():
            self.tree = scan_tree(local, keep_links=False)
        elif local.is_file():
            self.file = local
        else:
            raise ValueError(f"upload source {src} does not exist")

    @property
    def count(self) -> int:
        return len(self.tree.files) if self.tree is not None else 1

    @property
    def size(self) -> int:
        return self.tree.size if self.tree is not None else Path(self.src).stat().st_size

    def for_dest(self, dest: str) -> tuple[str, LocalTree]:
        """The remote directory the tree's names are under, and the tree, for one host's
        ``dest``. A directory ``src`` without a trailing / is copied *into* ``dest``."""
        if self.tree is not None:
            if self.src.endswith("/"):
                return dest.rstrip("/") or "/", self.tree
            return posixpath.join(dest, Path(self.src).name), self.tree
        assert self.file is not None
        if dest.endswith("/"):
            base, name = dest.rstrip("/") or "/", self.file.name
        else:
            base, name = posixpath.dirname(dest) or ".", posixpath.basename(dest)
        tree = self._files.get(name)
        if tree is None:
            tree = self._files[name] = file_tree(self.file, name)
        return base, tree


async def _upload(host: Host, base: str, tree: LocalTree, mode: str | None) -> HostResult:
    total = len(tree.files)
    check = await host.run(check_script(base, mode), input=tree.manifest_bytes())
    res = HostResult(host.name, exit=check.exit_status, stdout=check.stdout, stderr=check.stderr)
    if not check.ok:
        res.status = "failed"
        res.error = tail(check.stderr.strip() or "checksum listing failed", 300)
        return res
    changed = parse_changed(check.stdout, tree)
    sending = total if changed is None else len(changed)
    if sending == 0:
        res.stdout = ""
        res.data = {"sent": 0, "unchanged": total}
        return res
    payload = tree.tar(changed, mode=int(mode, 8) if mode else None)
    put = await host.run(put_script(base, tree, changed), input=payload)
    res = HostResult(host.name, exit=put.exit_status, stdout=put.stdout, stderr=put.stderr)
    if not put.ok or _DONE not in put.stdout:
        res.status = "failed"
        res.error = tail(put.stderr.strip() or f"exit {put.exit_status}", 300)
        return res
    res.data = {"sent": sending, "unchanged": total - sending}
    return res


class UploadKind(StepKindBase):
    kind: ClassVar[str] = "upload"
    own_timeout: ClassVar[bool] = True  # applied to each host
    per_host: ClassVar[bool] = True

    async def execute(self, step: UploadStep, ctx: StepContext) -> StepOutcome:
        problem = _fleet.check_on(step, ctx) or confined_problem(
            step, ctx, step.dest, "upload dest"
        )
        if problem is not None:
            return _fleet.failed_outcome(problem, ctx)
        try:
            source = await asyncio.to_thread(_Source, ctx.resolver.resolve(step.src))
        except (ResolveError, ValueError, OSError) as exc:
            return _fleet.failed_outcome(f"upload: {exc}", ctx)

        async def work(name: str, host: Host, r: Resolver, timeout: float | None) -> HostResult:
            dest = r.resolve(step.dest)
            bad = dotdot_problem(dest, "upload dest")
            if bad:  # never reached after confined_problem; kept next to the use
                return HostResult(name, "failed", error=bad)
            base, tree = source.for_dest(dest)
            job = _upload(host, base, tree, step.mode)
            return await (asyncio.wait_for(job, timeout) if timeout else job)

        outcome, results = await _fleet.rollout(
            ctx, step, [work], artifacts={"files": source.count, "bytes": source.size}
        )
        sent = sum(int(r.data.get("sent", 0)) for r in results.values() if r.attempts)
        outcome.artifacts["sent"] = sent
        outcome.artifacts["unchanged"] = sum(
            int(r.data.get("unchanged", 0)) for r in results.values() if r.attempts
        )
        return outcome

    def compensation(self, step: UploadStep, ctx: StepContext) -> Compensation | None:
        return None

    def preflight(
        self, step: UploadStep, plan: Plan, resolver: Resolver, state_dir: Any
    ) -> list[str]:
        return _fleet.host_key_problems(step, plan, resolver)


KIND = UploadKind()
