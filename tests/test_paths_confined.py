"""Paths confined (issue #13, item 6): an ``upload`` ``dest`` and a ``release`` ``path`` may not
climb out with ``..``, and ``tminus backups verify`` refuses a files backup whose archive a
restore would refuse.

Everything runs through the real CLI; the "host" is ``localhost`` (tminus's own local host,
the same file operations as over SSH), so what landed where is read back from the disk.

Mutations tried (each made the named test fail, then was restored):

* validate.py: the ``path-escapes-root`` check removed → ``test_check_rejects_literal_dotdot``
  (exit 0, the plan is "ok").
* upload.py: ``confined_problem`` returns None (and the per-host check removed) →
  ``test_upload_dest_from_a_variable_is_refused_before_any_change`` (the file lands in
  ``escaped/``).
* release.py: the ``confined_problem`` call in ``execute`` and the check in ``_host_path``
  removed → ``test_release_path_from_a_variable_is_refused`` (``releases/`` made outside).
* cli/backups.py: the ``archive_problems`` call removed →
  ``test_verify_refuses_an_archive_member_restore_refuses`` (exit 0, "1 file(s) match").
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from tests.conftest import Tm
from tminus.plan.paths import dotdot_problem, literal_dotdot


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_literal_and_resolved_dotdot_rules() -> None:
    assert literal_dotdot("/srv/app/../etc")
    assert literal_dotdot("${root}/../x") and literal_dotdot("..")
    assert not literal_dotdot("${root}/x") and not literal_dotdot("/srv/a..b/")
    assert not literal_dotdot("${root}..")  # not a component as written: checked at run time
    assert dotdot_problem("/srv/x/../../etc/", "upload dest")
    assert dotdot_problem("/srv/a..b/c", "upload dest") is None


def test_check_rejects_literal_dotdot(tm: Tm) -> None:
    plan = write(
        tm.cwd / "p.yaml",
        """\
name: conf
phases:
  - name: one
    steps:
      - {kind: upload, on: localhost, src: ./build/, dest: /srv/app/../../etc/}
      - kind: release
        on: localhost
        path: /srv/app/..
        source: ./build
        release_id: r1
""",
    )
    proc = tm("check", plan, check=2)
    err = proc.stderr
    assert f"{plan}:5:60:" in err and "error[path-escapes-root]" in err
    assert "upload dest '/srv/app/../../etc/' has a '..' component" in err
    assert f"{plan}:8:15:" in err and "release path '/srv/app/..'" in err
    assert "Traceback" not in err


def test_upload_dest_from_a_variable_is_refused_before_any_change(tm: Tm) -> None:
    root = tm.cwd / "root"
    (root / "inside").mkdir(parents=True)
    build = tm.cwd / "build"
    build.mkdir()
    (build / "app.conf").write_text("x=1\n")
    plan = write(
        tm.cwd / "p.yaml",
        f"""\
name: conf
variables:
  sub: "inside/../../escaped"
phases:
  - name: one
    steps:
      - {{kind: upload, on: localhost, src: "{build}/", dest: "{root}/${{sub}}/"}}
""",
    )
    assert tm("check", plan).returncode == 0  # the '..' is in a value: only run can see it
    proc = tm("run", plan)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    out = proc.stdout + proc.stderr
    assert f"upload dest '{root}/inside/../../escaped/' has a '..' component" in out
    assert "nothing was changed" in out
    assert not (tm.cwd / "escaped").exists()
    assert sorted(p.name for p in root.rglob("*")) == ["inside"]
    # the same plan with a value that stays inside works
    proc = tm("run", plan, "--var", "sub=inside/conf")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert (root / "inside" / "conf" / "app.conf").read_text() == "x=1\n"


def test_release_path_from_a_variable_is_refused(tm: Tm) -> None:
    build = tm.cwd / "build"
    build.mkdir()
    (build / "VERSION").write_text("1\n")
    plan = write(
        tm.cwd / "p.yaml",
        f"""\
name: conf
variables:
  app: "deploy/.."
phases:
  - name: one
    steps:
      - {{kind: release, on: localhost, path: "{tm.cwd}/${{app}}", source: "{build}",
          release_id: r1}}
""",
    )
    proc = tm("run", plan)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    out = proc.stdout + proc.stderr
    assert f"release path '{tm.cwd}/deploy/..' has a '..' component" in out
    # its undo has nothing to undo (the same path is refused): the deploy rolled back cleanly
    assert "ok: nothing to undo: release path" in out and ": rolled_back:" in out
    assert not (tm.cwd / "releases").exists() and not (tm.cwd / "deploy").exists()


def _real_backup(tm: Tm) -> Path:
    """A real files backup of a one-file tree, made by ``tminus run``."""
    tree = tm.cwd / "tree"
    tree.mkdir()
    (tree / "a.txt").write_text("a\n")
    plan = write(
        tm.cwd / "p.yaml",
        f"""\
name: bk
targets:
  paths:
    tree: {{path: "{tree}"}}
phases:
  - name: one
    steps:
      - {{kind: backup, path: tree}}
""",
    )
    tm("run", plan, check=0)
    (good,) = [p for p in (tm.cwd / ".tminus" / "backups").iterdir()]
    return good


def _files_backup_with(tm: Tm, good: Path, members: dict[str, bytes]) -> tuple[Path, str]:
    """A copy of the real backup ``good`` whose archive holds ``members`` instead, its
    manifest listing them with sizes and sha256 that match: all verify checked before is
    consistent."""
    bid = "20260101T000000Z-evil"
    d = good.parent / bid
    d.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    archive = buf.getvalue()
    (d / "files.tar.gz").write_bytes(archive)
    manifest = json.loads((good / "manifest.json").read_text())
    template = manifest["contents"][0]
    manifest["id"] = bid
    manifest["contents"] = [
        template | {"path": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for name, data in members.items()
    ]
    manifest["files"] = [
        manifest["files"][0] | {"size": len(archive), "sha256": hashlib.sha256(archive).hexdigest()}
    ]
    manifest["totals"]["bytes"] = len(archive)
    (d / "manifest.json").write_text(json.dumps(manifest))
    return d, bid


def test_verify_refuses_an_archive_member_restore_refuses(tm: Tm) -> None:
    good = _real_backup(tm)
    proc = tm("backups", "verify", good.name, check=0)
    assert "1 file(s) match the manifest" in proc.stdout
    assert "its 1 archive member(s) pass the restore checks" in proc.stdout

    d, bid = _files_backup_with(tm, good, {"ok.txt": b"ok\n", "../escaped.txt": b"owned\n"})
    proc = tm("backups", "verify", bid)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert f"{bid}: DAMAGED" in proc.stderr
    assert "archive member ../escaped.txt" in proc.stderr and "outside" in proc.stderr
    assert "match the manifest" not in proc.stdout
    # a restore refuses the same member (the rule verify now applies)
    from tminus.backups.base import BackupError, Manifest
    from tminus.backups.files import FilesDriver

    m = Manifest.load(d)
    target = tm.cwd / "restored"
    try:
        FilesDriver().restore(m, d, str(target))
    except BackupError as exc:
        assert "../escaped.txt" in str(exc)
    else:
        raise AssertionError("restore accepted a '..' member")
    assert not (tm.cwd / "escaped.txt").exists()


def test_verify_refuses_members_the_manifest_does_not_list(tm: Tm) -> None:
    d, bid = _files_backup_with(tm, _real_backup(tm), {"ok.txt": b"ok\n", "extra.txt": b"x\n"})
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["contents"] = [c for c in manifest["contents"] if c["path"] == "ok.txt"]
    (d / "manifest.json").write_text(json.dumps(manifest))
    proc = tm("backups", "verify", bid)
    assert proc.returncode == 1
    assert "archive member extra.txt is not in the manifest" in proc.stderr
