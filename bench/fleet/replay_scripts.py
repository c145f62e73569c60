"""The remote side of tminus' ``upload`` and ``release`` alone: their shell scripts replayed
over plain OpenSSH multiplexed connections (no asyncssh, no engine), next to the raw
commands of bench/fleet.py. It tells what the scripts cost the hosts, apart from the client.

    uv run python bench/fleet/replay_scripts.py [--hosts 100] [--repeat 3]

Times the upload's put script both ways, with the same checks (tar into a temp dir beside the
files, sha256 manifest verified, each file renamed into place): the lean one the step uses
(one ``mkdir -p`` for all directories and one ``mv -f -t DIR`` per directory, written on the
client from the file list) and the generic one it falls back to for trees too large to name
on one command line (a ``find … -exec sh`` loop with one ``mv`` per file); both results are
compared file by file.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fleet as F  # bench/fleet.py

from tminus.hosts.tree import LocalTree, scan_tree
from tminus.steps.release import stage_script, switch_script
from tminus.steps.upload import check_script, put_script


async def replay(
    bench: F.Bench, ro: F.Rollout, tree: LocalTree, control: Path, times: dict[str, list[float]]
) -> None:
    fleet, client, d, rid = bench.fleet, bench.client, ro.deploy, ro.release_id
    await F.on_all(fleet, client, None, control=control, master=True)
    tar = tree.tar(None)
    steps: list[tuple[str, str, bytes | None]] = [
        ("no-op (true)", "true", None),
        ("raw: prepare", ro.prepare(), None),
        ("raw: upload (tar x)", ro.unpack(), bench.tar),
        ("upload: check (manifest)", check_script(f"{d}/s1", None), tree.manifest().encode()),
        ("upload: put (generic, a mv per file)", put_script(f"{d}/s1"), tar),
        ("upload: put (lean, the step's)", put_script(f"{d}/s2", tree, None), tar),
        ("raw: release (cp -a, ln, mv)", ro.switch(), None),
        ("raw: cleanup", ro.cleanup(), None),
        ("release: stage", stage_script(d, rid + "b", tree.digest(), ["log"]), tar),
        ("release: switch + prune", switch_script(d, rid + "b", 3), None),
    ]
    try:
        for name, cmd, stdin in steps:
            t0 = time.perf_counter()
            await F.on_all(fleet, client, cmd, control=control, stdin=stdin)
            times.setdefault(name, []).append(time.perf_counter() - t0)
        same = (
            f"cd {d} && for s in s1 s2; do (cd $s && find . -type f | LC_ALL=C sort "
            "| xargs sha256sum | sha256sum); done | uniq | wc -l"
        )
        for r in await F.on_all(fleet, client, same, control=control):
            assert r.out.strip() == "1", f"{r.host}: the two put scripts left different trees"
    finally:
        await F.close_masters(client, control)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tmfb-", dir="/tmp"))
    tmp.chmod(0o755)
    fleet = F.BenchFleet(args.hosts, root=tmp / "sshd")
    times: dict[str, list[float]] = {}
    try:
        (tmp / "sshd").mkdir()
        fleet.deploy, fleet.data = tmp / "deploy", tmp / "data"
        fleet.data.mkdir()
        fleet.deploy.mkdir(mode=0o755)
        fleet.start()
        F._chown(fleet.deploy, fleet.user)
        art = tmp / "artifact"
        F.make_artifact(art)
        client = F.SshClient(str(fleet.identity_file), str(fleet.known_hosts), fleet.user)
        ns = argparse.Namespace(
            tminus_cleanup_step=False, timeout=600, ansible_upload="copy", forks=0, ansible_forks=0
        )
        bench = F.Bench(ns, fleet, tmp, client, art)
        for rep in range(args.repeat):
            ro = bench.new_rollout("replay", rep)
            bench.seed(ro)
            control = tmp / f"cm-{rep}"
            control.mkdir()
            asyncio.run(replay(bench, ro, scan_tree(art, keep_links=False), control, times))
    finally:
        fleet.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{args.hosts} hosts, median of {args.repeat}, seconds for one command on all hosts")
    for name, xs in times.items():
        print(f"{name:<34} {statistics.median(xs):6.2f}  ({' '.join(f'{x:.2f}' for x in xs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
