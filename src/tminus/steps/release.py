"""``kind: release``: Capistrano-style releases on every host of a group, in batches.

Layout under ``path`` on each host::

    releases/<id>/          one directory per release (default id: UTC YYYYmmddHHMMSS)
    shared/<p>              linked into every release for each entry of ``shared:``
    current -> releases/<id>
    .tminus/<id>.previous   what ``current`` pointed at before <id> was switched in
    .tminus/<id>.tree       checksum of the release's tree (a re-run reuses a complete copy)
    .tminus/order           release ids in the order they last went live, once each (``keep``)

Per batch, two phases (each one command on the host's connection):

1. **stage**: the local ``source`` tree goes as one tar stream (built once, the same bytes
   for every host) into ``releases/.<id>.tminus-PID``, is checked against its sha256 manifest,
   gets its ``shared`` links, and is renamed to ``releases/<id>``;
2. **switch** (only when the batch's failures stay within ``max_fail``,
   ``max_fail_per_batch`` and the canary rule): write
   ``.tminus/<id>.previous`` *on the host*, then ``ln -sfn releases/<id> current.tminus-PID &&
   mv -T current.tminus-PID current`` (an atomic rename), then prune to ``keep`` releases,
   never removing the live one or the one ``.previous`` names.

The built-in undo is the same step with ``action: rollback`` and the release id fixed when the
compensation is armed (before the step runs). It reads the per-host state written before the
switch, so it works after a crash: on every host whose ``current`` points at this release it
switches ``current`` back to ``.previous``, and it writes ``releases/<id>/BAD_RELEASE`` (who,
when, which deploy). A host that cannot be reached is a failed rollback unless the event log
shows it never switched. A host that fails an ``after_batch`` check after its switch gets the
same rollback script at once (it is switched back, and counts as failed).
"""

from __future__ import annotations

import asyncio
import posixpath
import re
import shlex
from pathlib import Path
from typing import Any, ClassVar

from tminus.hosts.base import Host
from tminus.hosts.tree import LocalTree, scan_tree
from tminus.plan.interpolate import ResolveError, Resolver
from tminus.plan.model import Plan
from tminus.plan.paths import dotdot_problem
from tminus.plan.steps import ReleaseStep
from tminus.steps import _fleet
from tminus.steps._fleet import History, HostResult, tail
from tminus.steps.base import Compensation, StepContext, StepKindBase, StepOutcome
from tminus.steps.upload import confined_problem

__all__ = [
    "KIND",
    "RELEASE_ID",
    "ReleaseKind",
    "rollback_script",
    "shared_problem",
    "stage_script",
    "switch_script",
]

#: What a release id may look like (it names a directory).
RELEASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
_STAGED = "tminus-staged"
_SWITCHED = "tminus-switched"


def shared_problem(entry: str) -> str | None:
    """Why a ``shared:`` entry is unusable, or None."""
    p = entry.rstrip("/")
    if not p or p.startswith("/") or ".." in p.split("/") or "\n" in p:
        return f"shared path '{entry}' must be relative, inside the release, without '..'"
    return None


def stage_script(path: str, rid: str, digest: str, shared: list[str]) -> str:
    """Reads the release's tar stream on stdin and makes ``releases/<id>`` from it."""
    q = shlex.quote
    lines = [
        "set -e",
        f"P={q(path)}; ID={q(rid)}; DIGEST={q(digest)}",
        '[ -d "$P/releases" ] && [ -d "$P/shared" ] && [ -d "$P/.tminus" ] || '
        'mkdir -p -- "$P/releases" "$P/shared" "$P/.tminus"',
        'R="$P/releases/$ID"',
        'if [ -d "$R" ]; then',
        "  cat >/dev/null",
        '  if [ -e "$R/BAD_RELEASE" ]; then',
        '    echo "tminus: release $ID was rolled back on this host (BAD_RELEASE): '
        'deploy it under a new release_id" >&2; exit 3',
        "  fi",
        '  if [ "$(cat "$P/.tminus/$ID.tree" 2>/dev/null)" != "$DIGEST" ]; then',
        '    echo "tminus: $R exists with other contents: use a new release_id" >&2; exit 3',
        "  fi",
        f"  echo {_STAGED} again; exit 0",
        "fi",
        'T="$P/releases/.$ID.tminus-$$"',
        "trap 'rm -rf -- \"$T\"' EXIT",
        'if [ -e "$T" ] || [ -L "$T" ]; then rm -rf -- "$T"; fi',
        'mkdir -- "$T"',
        'tar -x -p --no-same-owner -f - -C "$T"',
        'if ! (cd -- "$T" && sha256sum --quiet -c .tminus-sha256 >&2); then',
        "  echo 'tminus: checksum mismatch after the transfer' >&2; exit 4",
        "fi",
        'rm -f -- "$T/.tminus-sha256"',
    ]
    for entry in shared:
        s = entry.rstrip("/")
        is_dir = "yes" if entry.endswith("/") else ""
        lines += [
            f"S={q(s)}",
            'if [ ! -e "$P/shared/$S" ] && [ ! -L "$P/shared/$S" ]; then',
            '  if [ -e "$T/$S" ] || [ -L "$T/$S" ]; then',
            '    mkdir -p -- "$(dirname -- "$P/shared/$S")"; mv -- "$T/$S" "$P/shared/$S"',
            f"  elif [ -n {q(is_dir)} ]; then",
            '    mkdir -p -- "$P/shared/$S"',
            "  else",
            '    echo "tminus: shared path $S is neither in $P/shared nor in the release '
            '(end it with / to create an empty directory)" >&2; exit 3',
            "  fi",
            "fi",
            'if [ -e "$T/$S" ] || [ -L "$T/$S" ]; then rm -rf -- "$T/$S"; fi',
            'case $S in */*) mkdir -p -- "$T/${S%/*}" ;; esac',
            'ln -s -- "$P/shared/$S" "$T/$S"',
        ]
    lines += [
        'printf \'%s\\n\' "$DIGEST" > "$P/.tminus/$ID.tree"',
        'mv -T -- "$T" "$R"',
        "trap - EXIT",
        f"echo {_STAGED}",
    ]
    return "\n".join(lines) + "\n"


def switch_script(path: str, rid: str, keep: int) -> str:
    """Record what ``current`` points at, switch it atomically, prune old releases."""
    q = shlex.quote
    return (
        "\n".join(
            [
                "set -e",
                f"P={q(path)}; ID={q(rid)}; KEEP={int(keep)}",
                "NL='",  # a newline, for the shell's own list of the order file
                "'",
                'cd -- "$P"',
                'if [ ! -d "releases/$ID" ]; then',
                '  echo "tminus: $P/releases/$ID is missing" >&2; exit 3',
                "fi",
                "if [ -e current ] && [ ! -L current ]; then",
                '  echo "tminus: $P/current exists and is not a symbolic link" >&2; exit 3',
                "fi",
                "cur=$(readlink current 2>/dev/null || true)",
                'if [ "${cur##*/}" != "$ID" ]; then',
                '  printf \'%s\\n\' "$cur" > ".tminus/$ID.previous.tmp"',
                '  mv -f -- ".tminus/$ID.previous.tmp" ".tminus/$ID.previous"',
                "fi",
                'ln -sfn "releases/$ID" "current.tminus-$$"',
                'mv -T -- "current.tminus-$$" current',
                f"echo {_SWITCHED}",
                "set +e",
                # the order lists each release once, where it last went live (a re-run of the
                # same release leaves it as it is)
                "last=; rest=",
                "if [ -f .tminus/order ]; then",
                '  while IFS= read -r l || [ -n "$l" ]; do',
                '    last=$l; [ "$l" = "$ID" ] || rest="$rest$l$NL"',
                "  done < .tminus/order",
                "fi",
                'if [ "$last" != "$ID" ]; then',
                '  printf \'%s%s\\n\' "$rest" "$ID" > .tminus/order.tmp '
                "&& mv -f -- .tminus/order.tmp .tminus/order",
                "fi",
                'prev=; if [ -f ".tminus/$ID.previous" ]; then',
                '  IFS= read -r prev < ".tminus/$ID.previous" || true',
                "fi",
                "prev=${prev##*/}",
                # Existing release dirs with the position they went live at (0: unknown, oldest),
                # oldest first; all but the newest KEEP are candidates, minus current and previous.
                'for d in releases/*; do [ -e "$d" ] || [ -L "$d" ] || continue; '
                "printf '%s\\n' \"${d#releases/}\"; done |",
                'awk -v keep="$KEEP" '
                '\'BEGIN{while ((getline l < ".tminus/order") > 0) o[l]=++n} '
                "{d[$0]=1} END{for (x in d) {k[++m]=x; v[m]=(x in o)?o[x]:0} "
                "for (i=2; i<=m; i++) {kx=k[i]; vx=v[i]; j=i-1; "
                'while (j>0 && (v[j]>vx || (v[j]==vx && k[j]"">kx""))) '
                "{k[j+1]=k[j]; v[j+1]=v[j]; j--} k[j+1]=kx; v[j+1]=vx} "
                "for (i=1; i<=m-keep; i++) print k[i]}' |",
                "while IFS= read -r r; do",
                '  if [ -n "$r" ] && [ "$r" != "$ID" ] && [ "$r" != "$prev" ]; then',
                '    rm -rf -- "releases/$r" ".tminus/$r.previous" ".tminus/$r.tree" '
                '&& echo "tminus-pruned $r"',
                "  fi",
                "done",
                "exit 0",
            ]
        )
        + "\n"
    )


def rollback_script(path: str, rid: str, who: str, deploy_id: str, host: str) -> str:
    """Mark the release bad (naming ``host``, the inventory name) and, where ``current``
    points at it, switch back."""
    q = shlex.quote
    return (
        "\n".join(
            [
                f"P={q(path)}; ID={q(rid)}; WHO={q(who)}; DEPLOY={q(deploy_id)}; HOST={q(host)}",
                'if ! cd -- "$P" 2>/dev/null; then echo tminus-absent; exit 0; fi',
                "cur=$(readlink current 2>/dev/null || true)",
                'if [ -d "releases/$ID" ]; then',
                "  printf 'rolled back by %s at %s (deploy %s, host %s)\\n' \"$WHO\" "
                '"$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$DEPLOY" "$HOST" '
                '> "releases/$ID/BAD_RELEASE" || exit 1',
                "fi",
                'if [ -z "$cur" ] || [ "${cur##*/}" != "$ID" ]; then',
                '  echo "tminus-not-current $cur"; exit 0',
                "fi",
                'if [ ! -f ".tminus/$ID.previous" ]; then',
                '  echo "tminus: current points at $ID but .tminus/$ID.previous is missing: '
                'cannot tell what to switch back to" >&2; exit 3',
                "fi",
                'prev=$(cat ".tminus/$ID.previous")',
                'if [ -z "$prev" ]; then',
                "  rm -f -- current && echo tminus-removed-current; exit $?",
                "fi",
                'ln -sfn -- "$prev" "current.tminus-$$" && mv -T -- "current.tminus-$$" current '
                '&& echo "tminus-switched-back $prev"',
            ]
        )
        + "\n"
    )


def _host_path(step: ReleaseStep, r: Resolver) -> str:
    path = r.resolve(step.path).rstrip("/")
    if not posixpath.isabs(path):
        raise ValueError(f"release path '{path}' must be absolute")
    bad = dotdot_problem(path, "release path")
    if bad:
        raise ValueError(bad)
    return path


def _check_id(rid: str) -> str:
    if not RELEASE_ID.match(rid):
        raise ValueError(
            f"release id '{rid}' must be letters, digits, '.', '_', '+' or '-' (it names a "
            "directory)"
        )
    return rid


def _never_switched(result: dict[str, Any] | None) -> bool:
    """Does a host's last forward result prove that its ``current`` never moved? (Its stage
    failed, or it was skipped before the switch.) No result, or a switch whose outcome was
    lost with the connection, proves nothing."""
    if result is None:
        return False
    if result.get("switched") is False:
        return True
    return result.get("status") in ("skipped", "excluded") and "switched" not in result


async def _switch_back(
    step: ReleaseStep,
    rid: str,
    who: str,
    deploy_id: str,
    name: str,
    host: Host,
    r: Resolver,
    timeout: float | None,
) -> tuple[HostResult, str | None]:
    """Run the rollback script of release ``rid`` on one host (switch back, mark it
    BAD_RELEASE). The host's result, and what the script did (its last ``tminus-…`` line),
    or None when it failed (the result then says why)."""
    script = rollback_script(_host_path(step, r), rid, who, deploy_id, name)
    job = host.run(script)
    run = await (asyncio.wait_for(job, timeout) if timeout else job)
    res = HostResult(name, exit=run.exit_status, stdout=run.stdout, stderr=run.stderr)
    out = run.stdout.strip().splitlines()
    if run.ok and out:
        done = out[-1].removeprefix("tminus-")
        res.data = {"rollback": done}
        return res, done
    res.status = "failed"
    res.error = tail(run.stderr.strip() or f"exit {run.exit_status}", 300)
    return res, None


class ReleaseKind(StepKindBase):
    kind: ClassVar[str] = "release"
    own_timeout: ClassVar[bool] = True  # applied to each host
    per_host: ClassVar[bool] = True

    # --- the release id: fixed before the step runs, reused by a retry ------------------------
    def _release_id(self, step: ReleaseStep, ctx: StepContext) -> str:
        """The release id; a template is kept as written (it resolves to the same value when
        the undo runs); the default timestamp is chosen once per step of a deploy."""
        if step.release_id:
            return step.release_id
        chosen = ctx.services.release_id
        if isinstance(chosen, str):
            return chosen
        for e in History.read(ctx.services.fleet if ctx.services.has_fleet else None).events:
            data = e.get("data") or {}
            if e["type"] == "release.started" and data.get("step") == ctx.key:
                chosen = str(data["release_id"])
        if not isinstance(chosen, str):
            chosen = _fleet.now_stamp()
        ctx.services.release_id = chosen
        return chosen

    def compensation(self, step: ReleaseStep, ctx: StepContext) -> Compensation | None:
        if step.action == "rollback":
            return None
        undo = ReleaseStep(
            kind="release",
            name=f"Roll back release {self._release_id(step, ctx)} on {step.on}",
            on=step.on,
            path=step.path,
            source=step.source,
            release_id=self._release_id(step, ctx),
            action="rollback",
            timeout=step.timeout,
            retries=step.retries,
            idempotent=True,
        )
        return Compensation(undo, partial_ok=True)

    # --- forward ----------------------------------------------------------------------------
    async def execute(self, step: ReleaseStep, ctx: StepContext) -> StepOutcome:
        problem = _fleet.check_on(step, ctx)
        if problem is not None:
            return _fleet.failed_outcome(problem, ctx)
        try:
            rid = _check_id(ctx.resolver.resolve(self._release_id(step, ctx)))
            for entry in step.shared:
                bad = shared_problem(entry)
                if bad:
                    raise ValueError(bad)
            refused = confined_problem(step, ctx, step.path, "release path")
        except (ResolveError, ValueError) as exc:
            return _fleet.failed_outcome(f"release: {exc}", ctx)
        if refused and step.action == "rollback":  # the forward step refused the same path
            return StepOutcome(True, ctx.resolver.mask(f"nothing to undo: {refused}"))
        if refused:
            return _fleet.failed_outcome(f"release: {refused}", ctx)
        if step.action == "rollback":
            return await self._rollback(step, ctx, rid)
        try:
            source = ctx.resolver.resolve(step.source)
            tree = await asyncio.to_thread(scan_tree, Path(source), keep_links=True)
        except (ResolveError, ValueError, OSError) as exc:
            return _fleet.failed_outcome(f"release: source: {exc}", ctx)
        ctx.emit(
            "release.started",
            f"release {rid} of {source} on {step.on}",
            {"step": ctx.key, "release_id": rid},
        )
        return await self._deploy(step, ctx, rid, tree)

    async def _deploy(
        self, step: ReleaseStep, ctx: StepContext, rid: str, tree: LocalTree
    ) -> StepOutcome:
        digest = tree.digest()

        async def stage(name: str, host: Host, r: Resolver, timeout: float | None) -> HostResult:
            script = stage_script(_host_path(step, r), rid, digest, step.shared)

            async def go() -> HostResult:
                run = await host.run(script, input=tree.tar())
                res = HostResult(name, exit=run.exit_status, stdout=run.stdout, stderr=run.stderr)
                res.data = {"switched": False}
                if not run.ok or _STAGED not in run.stdout:
                    res.status = "failed"
                    res.error = "stage: " + tail(
                        run.stderr.strip() or f"exit {run.exit_status}", 300
                    )
                return res

            try:
                return await (asyncio.wait_for(go(), timeout) if timeout else go())
            except TimeoutError:  # the stage never touches `current`
                return HostResult(
                    name,
                    "failed",
                    error=f"stage: timed out after {timeout:g}s",
                    data={"switched": False},
                )

        async def switch(name: str, host: Host, r: Resolver, timeout: float | None) -> HostResult:
            script = switch_script(_host_path(step, r), rid, step.keep)

            async def go() -> HostResult:
                run = await host.run(script)
                res = HostResult(name, exit=run.exit_status, stdout=run.stdout, stderr=run.stderr)
                switched = _SWITCHED in run.stdout
                pruned = [
                    ln.split(" ", 1)[1]
                    for ln in run.stdout.splitlines()
                    if ln.startswith("tminus-pruned ")
                ]
                # No exit status (connection lost): the switch may or may not have happened.
                res.data = {
                    "switched": True if switched else (None if run.exit_status is None else False)
                }
                if pruned:
                    res.data["pruned"] = pruned
                if not run.ok or not switched:
                    res.status = "failed"
                    res.error = "switch: " + tail(
                        run.stderr.strip() or f"exit {run.exit_status}", 300
                    )
                return res

            try:
                return await (asyncio.wait_for(go(), timeout) if timeout else go())
            except TimeoutError:
                return HostResult(
                    name,
                    "failed",
                    error=f"switch: timed out after {timeout:g}s",
                    data={"switched": None},
                )

        who = str(ctx.resolver.variables.get("operator") or "unknown")

        async def revert(name: str, host: Host, r: Resolver, timeout: float | None) -> HostResult:
            """A host that failed its check after the switch: switch it back, BAD_RELEASE."""
            res, done = await _switch_back(step, rid, who, ctx.deploy_id, name, host, r, timeout)
            if done is not None:
                res.data["undone"] = done.replace("-", " ", 1)
                if done.startswith(("switched-back", "removed")):
                    res.data["switched_back"] = True
            return res

        outcome, results = await _fleet.rollout(
            ctx,
            step,
            [stage, switch],
            artifacts={"release_id": rid, "files": len(tree.files), "bytes": tree.size},
            host_data={"release_id": rid},
            revert=revert,
        )
        outcome.artifacts["switched"] = [
            n
            for n, r in results.items()
            if r.data.get("switched") and r.attempts and not r.data.get("switched_back")
        ]
        outcome.artifacts["switched_back"] = [
            n for n, r in results.items() if r.data.get("switched_back")
        ]
        return outcome

    # --- rollback ---------------------------------------------------------------------------
    async def _rollback(self, step: ReleaseStep, ctx: StepContext, rid: str) -> StepOutcome:
        history = History.read(ctx.services.fleet if ctx.services.has_fleet else None)
        forward: dict[str, dict[str, Any]] = {}
        for e in history.events:
            data = e.get("data") or {}
            if (
                e["type"] == "host.result"
                and data.get("release_id") == rid
                and data.get("action") != "rollback"
                and data.get("host")
            ):
                forward[str(data["host"])] = data
        who = str(ctx.resolver.variables.get("operator") or "unknown")

        async def undo(name: str, host: Host, r: Resolver, timeout: float | None) -> HostResult:
            res, done = await _switch_back(step, rid, who, ctx.deploy_id, name, host, r, timeout)
            if done is None and res.exit is None and _never_switched(forward.get(name)):
                res.status = "skipped"
                res.error = "unreachable, but it never switched to this release"
            return res

        outcome, results = await _fleet.rollout(
            ctx,
            step,
            [undo],
            artifacts={"release_id": rid},
            host_data={"release_id": rid, "action": "rollback"},
        )
        outcome.artifacts["switched_back"] = [
            n
            for n, r in results.items()
            if str(r.data.get("rollback", "")).startswith(("switched-back", "removed"))
        ]
        return outcome

    def preflight(
        self, step: ReleaseStep, plan: Plan, resolver: Resolver, state_dir: Any
    ) -> list[str]:
        return _fleet.host_key_problems(step, plan, resolver)


KIND = ReleaseKind()
