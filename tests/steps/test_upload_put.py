"""The upload step's put script on a real shell, tar and coreutils (the local host): the lean
script (a directory the host lacks renamed into place whole, one ``mv -t`` per directory it
has) leaves the same tree as the generic one (one ``mv`` per file), starts far fewer
processes, still checks the manifest before anything is moved and still renames every file
into place."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from tminus.hosts.local import LocalHost
from tminus.hosts.tree import LocalTree, scan_tree
from tminus.steps import upload
from tminus.steps.upload import put_script


def _bench_like_tree(root: Path) -> LocalTree:
    """20 files in 7 directories, as bench/fleet.py's tree, plus awkward names and modes."""
    names = (
        ["bin/app", "bin/migrate"]
        + [f"lib/module_{i:02d}.py" for i in range(8)]
        + [f"static/css/site {i}.css" for i in range(3)]
        + [f"static/js/-bundle_{i}.js" for i in range(4)]
        + ["static/img/logo.bin", "config/app.ini", "VERSION"]
    )
    for i, name in enumerate(names):
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(f"{name} {i}\n".encode() * (i + 1))
    (root / "bin" / "app").chmod(0o755)
    (root / "config" / "app.ini").chmod(0o640)
    (root / "empty" / "dir").mkdir(parents=True)
    tree = scan_tree(root, keep_links=False)
    assert len(tree.files) == 20
    return tree


def _listing(root: Path) -> dict[str, tuple[str, int, bytes]]:
    out: dict[str, tuple[str, int, bytes]] = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        kind = "d" if stat.S_ISDIR(st.st_mode) else "f"
        data = p.read_bytes() if kind == "f" else b""
        out[p.relative_to(root).as_posix()] = (kind, stat.S_IMODE(st.st_mode), data)
    return out


def _run(script: str, payload: bytes) -> tuple[int | None, str, str]:
    r = asyncio.run(LocalHost().run(script, input=payload))
    return r.exit_status, r.stdout, r.stderr


def _execs(script: str, payload: bytes, tmp: Path) -> int:
    """Processes the script starts (execve calls under strace -f, the shell included)."""
    if shutil.which("strace") is None:
        pytest.fail("strace is needed to count the processes (apt-get install strace)")
    log = tmp / "strace.log"
    proc = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=execve", "-o", str(log), "sh", "-c", script],
        input=payload,
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return sum(1 for ln in log.read_text().splitlines() if "execve(" in ln and "= 0" in ln)


def test_lean_put_leaves_the_generic_tree_with_a_few_processes(tmp_path: Path) -> None:
    tree = _bench_like_tree(tmp_path / "src")
    payload = tree.tar()
    lean, generic = tmp_path / "lean dest", tmp_path / "generic"
    lean_script, generic_script = put_script(str(lean), tree, None), put_script(str(generic))
    assert "find" not in lean_script and "find" in generic_script
    for script in (lean_script, generic_script):
        code, out, err = _run(script, payload)
        assert (code, out.strip()) == (0, "tminus-uploaded"), err
    assert _listing(lean) == _listing(generic)
    assert _listing(lean)["bin/app"][1] == 0o755
    assert _listing(lean)["config/app.ini"][1] == 0o640
    assert _listing(lean)["empty/dir"][0] == "d"
    assert not list(lean.glob(".tminus-upload-*"))
    # fresh destinations: sh, mkdir, mktemp, tar, sha256sum, one mv (every directory is new)
    # and the trap's rm = 7 (measured: 7; a mv per directory, before: 14; the generic
    # script, a mv per file: 40)
    n_lean = _execs(put_script(str(tmp_path / "c1"), tree, None), payload, tmp_path)
    n_generic = _execs(put_script(str(tmp_path / "c2")), payload, tmp_path)
    assert n_lean <= 7 < 30 <= n_generic, (n_lean, n_generic)


def test_into_a_tree_the_host_partly_has(tmp_path: Path) -> None:
    """The host has some of the directories (with files of its own) and lacks others: the
    new ones are renamed in whole, the files of the others one ``mv`` per directory, the
    host's own files stay, and the tree is the one the generic script leaves. A new
    directory keeps the source's mode; one the host had keeps its own.

    Mutations tried: the ``[ -e "$D"/DIR ]`` test dropped (every directory taken for new):
    ``mv`` refuses to rename ``bin`` over the host's non-empty one and the put fails; no
    directory taken for new (``n<k>`` never set): nothing makes the new directories and
    the puts into them fail (this test and four others)."""
    tree = _bench_like_tree(tmp_path / "src")
    (tmp_path / "src" / "private").mkdir()
    (tmp_path / "src" / "private" / "key.pem").write_text("k\n")
    (tmp_path / "src" / "private").chmod(0o700)
    tree = scan_tree(tmp_path / "src", keep_links=False)
    dests = []
    for name, script in (("lean", put_script), ("generic", None)):
        dest = tmp_path / name
        (dest / "bin").mkdir(parents=True)
        (dest / "bin" / "host-only").write_text("mine\n")
        (dest / "static" / "css").mkdir(parents=True)
        (dest / "static" / "css").chmod(0o750)
        text = script(str(dest), tree, None) if script else put_script(str(dest))
        code, out, err = _run(text, tree.tar())
        assert (code, out.strip()) == (0, "tminus-uploaded"), err
        dests.append(_listing(dest))
    lean, generic = dests
    assert lean["bin/host-only"] == ("f", 0o644, b"mine\n")
    assert lean["private"][1] == 0o700 and lean["static/css"][1] == 0o750
    # the generic script makes new directories with mkdir -p (the umask's mode)
    assert generic["private"][1] != 0o700
    lean.pop("private"), generic.pop("private")
    assert lean == generic


def test_a_partial_put_moves_only_the_files_sent(tmp_path: Path) -> None:
    tree = _bench_like_tree(tmp_path / "src")
    dest = tmp_path / "dest"
    assert _run(put_script(str(dest), tree, None), tree.tar())[0] == 0
    (dest / "lib" / "module_03.py").write_text("changed on the host\n")
    (dest / "bin" / "app").write_text("changed too\n")
    (tmp_path / "src" / "bin" / "app").write_text("new app\n")
    tree = scan_tree(tmp_path / "src", keep_links=False)
    sent = {"bin/app"}
    code, out, err = _run(put_script(str(dest), tree, sent), tree.tar(sent))
    assert (code, out.strip()) == (0, "tminus-uploaded"), err
    assert (dest / "bin" / "app").read_text() == "new app\n"
    assert (dest / "lib" / "module_03.py").read_text() == "changed on the host\n"  # not sent


def test_a_corrupted_stream_moves_nothing(tmp_path: Path) -> None:
    """One byte of one file changed in transit (same size, so tar accepts it): the manifest
    check fails, exit 4, the destination is as it was and no staging directory is left.

    Mutation tried: the ``sha256sum -c`` check removed from ``_put_head``: the corrupted file
    is moved into place and this fails."""
    tree = _bench_like_tree(tmp_path / "src")
    dest = tmp_path / "dest"
    assert _run(put_script(str(dest), tree, None), tree.tar())[0] == 0
    before = _listing(dest)
    (tmp_path / "src" / "VERSION").write_text("v2\n")
    tree = scan_tree(tmp_path / "src", keep_links=False)
    good = tree.tar()
    buf = io.BytesIO(good)
    with tarfile.open(fileobj=buf) as tar:
        member = tar.getmember("VERSION")
    at = member.offset_data
    bad = good[:at] + b"X" + good[at + 1 :]
    code, _out, err = _run(put_script(str(dest), tree, None), bad)
    assert code == 4 and "checksum mismatch" in err
    assert _listing(dest) == before
    assert not list(dest.glob(".tminus-upload-*"))


def test_files_are_renamed_into_place_not_rewritten(tmp_path: Path) -> None:
    """A reader holding the old file open keeps reading the old contents: the new file is a
    new inode renamed over the name, never the old one truncated and written.

    Mutation tried: ``mv -f -t DIR`` replaced by ``cp -f -t DIR`` in ``_lean_moves``: the open
    reader sees the new contents and this fails."""
    src = tmp_path / "src"
    (src / "conf").mkdir(parents=True)
    (src / "conf" / "app.ini").write_text("version=1\n")
    dest = tmp_path / "dest"
    tree = scan_tree(src, keep_links=False)
    assert _run(put_script(str(dest), tree, None), tree.tar())[0] == 0
    with (dest / "conf" / "app.ini").open() as reader:
        (src / "conf" / "app.ini").write_text("version=2\n")
        tree = scan_tree(src, keep_links=False)
        assert _run(put_script(str(dest), tree, None), tree.tar())[0] == 0
        assert reader.read() == "version=1\n"
    assert (dest / "conf" / "app.ini").read_text() == "version=2\n"


def test_a_tree_too_large_to_name_falls_back_to_the_generic_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = _bench_like_tree(tmp_path / "src")
    monkeypatch.setattr(upload, "LEAN_LIMIT", 100)
    script = put_script(str(tmp_path / "dest"), tree, None)
    assert "find . ! -type d" in script
    code, out, err = _run(script, tree.tar())
    assert (code, out.strip()) == (0, "tminus-uploaded"), err
    assert (tmp_path / "dest" / "static" / "css" / "site 1.css").exists()
    assert os.access(tmp_path / "dest" / "bin" / "app", os.X_OK)
