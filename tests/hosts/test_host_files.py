"""stdin input and file operations, the same on LocalHost and SshHost (real sshd)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from pathlib import Path

from tminus.hosts.local import LocalHost
from tminus.hosts.pool import HostPool
from tminus.hosts.tree import MANIFEST, scan_tree
from tminus.testing.sshd import SshdFleet


def test_binary_input_over_ssh_with_flow_control(fleet: SshdFleet) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # more than the channel window, in chunks

    async def go() -> tuple[str, str, str]:
        async with HostPool(fleet.targets()) as pool:
            h = pool.ssh("h2")
            r = await h.run("sha256sum | cut -d' ' -f1; echo done >&2", input=data)
            early = await h.run("head -c 10 >/dev/null; echo early", input=data)
            return r.stdout.strip(), r.stderr.strip(), early.stdout.strip()

    digest, err, early = asyncio.run(go())
    assert digest == hashlib.sha256(data).hexdigest()
    assert err == "done"
    assert early == "early"  # the command stopped reading: no hang, no error


def test_become_override_per_command(fleet: SshdFleet) -> None:
    assert fleet.can_become

    async def go() -> list[str]:
        async with HostPool(fleet.targets()) as pool:
            h = pool.ssh("h6")
            return [
                (await h.run("whoami")).stdout.strip(),
                (await h.run("whoami", become=True)).stdout.strip(),
                (await h.run("cat", input=b"as root\n", become="root")).stdout.strip(),
            ]

    assert asyncio.run(go()) == [fleet.user, "root", "as root"]


def test_local_host_has_the_same_file_operations(tmp_path: Path) -> None:
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(5000))
    dest = tmp_path / "sub" / "b.bin"
    dest.parent.mkdir()

    async def go() -> tuple[str | None, str | None, str]:
        h = LocalHost()
        before = await h.sha256(str(dest))
        await h.put(src, str(dest))
        r = await h.run("wc -c", input=b"12345")
        return before, await h.sha256(str(dest)), r.stdout.strip()

    before, after, counted = asyncio.run(go())
    assert before is None
    assert after == hashlib.sha256(src.read_bytes()).hexdigest()
    assert counted == "5"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["b.bin"]  # no temporary left


def test_tree_tar_carries_a_checked_manifest(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "d" / "e").mkdir(parents=True)
    (root / "d" / "e" / "f.txt").write_text("f\n")
    (root / "x").write_text("x\n")
    (root / "x").chmod(0o751)
    (root / "link").symlink_to("x")
    tree = scan_tree(root, keep_links=True)
    assert sorted(f.rel for f in tree.files) == ["d/e/f.txt", "x"]
    assert sorted(tree.dirs) == ["d", "d/e"]
    assert tree.links == [("link", "x")]
    out = tmp_path / f"out-{uuid.uuid4().hex[:6]}"
    out.mkdir()

    async def unpack() -> str:
        r = await LocalHost().run(
            f"tar -x -p -f - -C {out} && cd {out} && sha256sum --quiet -c {MANIFEST} && echo ok",
            input=tree.tar(),
        )
        return r.stdout.strip() + r.stderr

    assert asyncio.run(unpack()) == "ok"
    assert (out / "d" / "e" / "f.txt").read_text() == "f\n"
    assert (out / "x").stat().st_mode & 0o777 == 0o751
    assert (out / "link").readlink() == Path("x")
    # a partial tar has only the files asked for, and a manifest of just those
    part = scan_tree(root, keep_links=True).tar(["x"])
    assert b"f.txt" not in part and b"./x" in part
    assert tree.digest() == scan_tree(root, keep_links=True).digest()
    (root / "x").write_text("changed\n")
    assert tree.digest() != scan_tree(root, keep_links=True).digest()
