"""Files driver: tar.gz of a path target with a per-file manifest; atomic restore."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.backups.conftest import flip_byte, truncate
from tminus.backups import BackupError, Manifest, get_driver
from tminus.backups.base import FileEntry


def tree(root: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = (p.read_bytes(), p.stat().st_mode & 0o777)
    return out


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    (root / "static" / "css").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "index.html").write_text("<h1>hi</h1>\n")
    (root / "static" / "css" / "app.css").write_text("body{}\n" * 100)
    (root / "static" / "blob.bin").write_bytes(os.urandom(200_000))
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o750)
    (root / "current").symlink_to("static")
    return root


def test_backup_lists_every_file(site: Path, tmp_path: Path) -> None:
    m = get_driver("files").backup(str(site), tmp_path / "b")
    assert Manifest.load(tmp_path / "b" / m.id) == m
    assert m.id.endswith("-site")
    entries = {c.path: c for c in m.contents}
    assert set(entries) == {
        "current",
        "empty",
        "index.html",
        "run.sh",
        "static",
        "static/blob.bin",
        "static/css",
        "static/css/app.css",
    }
    assert entries["static/blob.bin"].size == 200_000
    assert entries["current"].type == "symlink" and entries["current"].link == "static"
    assert entries["run.sh"].mode == 0o750
    assert [f.path for f in m.files] == ["files.tar.gz"]


def test_restore_replaces_the_tree(site: Path, tmp_path: Path) -> None:
    drv = get_driver("files")
    before = tree(site)
    m = drv.backup(str(site), tmp_path / "b")
    (site / "index.html").write_text("broken")
    (site / "static" / "blob.bin").unlink()
    (site / "new.txt").write_text("added after the backup")
    drv.restore(m, tmp_path / "b" / m.id, str(site))
    assert tree(site) == before
    assert drv.compare(m, str(site)) == []
    leftovers = [p.name for p in site.parent.iterdir() if p.name.startswith(".site.")]
    assert leftovers == []


def test_single_file_target(tmp_path: Path) -> None:
    f = tmp_path / "config.yaml"
    f.write_text("a: 1\n")
    drv = get_driver("files")
    m = drv.backup(str(f), tmp_path / "b")
    f.write_text("a: 2\n")
    drv.restore(m, tmp_path / "b" / m.id, str(f))
    assert f.read_text() == "a: 1\n"


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_archive_is_refused_and_target_untouched(
    site: Path, tmp_path: Path, damage: str
) -> None:
    drv = get_driver("files")
    m = drv.backup(str(site), tmp_path / "b")
    (site / "index.html").write_text("changed")
    changed = tree(site)
    archive = tmp_path / "b" / m.id / "files.tar.gz"
    size = archive.stat().st_size
    (flip_byte if damage == "flip" else truncate)(archive)
    with pytest.raises(BackupError) as exc:
        drv.restore(m, tmp_path / "b" / m.id, str(site))
    msg = str(exc.value)
    assert "files.tar.gz" in msg and "refusing" in msg
    if damage == "flip":
        assert "corrupted: sha256 expected" in msg
    else:
        assert f"truncated: expected {size} bytes, found {size // 2}" in msg
    assert tree(site) == changed
    report = drv.verify(m, tmp_path / "b" / m.id, "")
    assert not report.ok


def test_verify_compares_every_file(site: Path, tmp_path: Path) -> None:
    drv = get_driver("files")
    m = drv.backup(str(site), tmp_path / "b")
    report = drv.verify(m, tmp_path / "b" / m.id, "")
    assert report.ok and report.checked_files == 4
    assert report.scratch and not Path(report.scratch).exists()
    # a manifest that disagrees with the archive (a file lost from the archive looks like this)
    m.contents = [
        FileEntry(c.path, c.size, "0" * 64, c.type, c.mode) if c.path == "index.html" else c
        for c in m.contents
    ] + [FileEntry("lost.txt", 3, "1" * 64)]
    bad = drv.verify(m, tmp_path / "b" / m.id, "")
    assert not bad.ok
    assert bad.mismatches[0] == "lost.txt: missing"
    assert bad.mismatches[1].startswith("index.html: sha256 ")
    assert bad.scratch and not Path(bad.scratch).exists()


def test_empty_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "nothing" / "sub").mkdir(parents=True)
    with pytest.raises(BackupError, match="holds no files"):
        get_driver("files").backup(str(tmp_path / "nothing"), tmp_path / "b")
    assert list((tmp_path / "b").iterdir()) == []


def test_snapshot(site: Path) -> None:
    snap = get_driver("files").snapshot(str(site))
    assert snap["files"] == 4 and snap["dirs"] == 3
    assert get_driver("files").estimate_size(str(site)) == snap["bytes"] > 200_000


def test_absolute_symlinks_are_kept(site: Path, tmp_path: Path) -> None:
    (site / "shared").symlink_to("/srv/app/shared")  # dangling and absolute: kept as is
    site.chmod(0o751)
    drv = get_driver("files")
    m = drv.backup(str(site), tmp_path / "b")
    (site / "shared").unlink()
    site.chmod(0o755)
    drv.restore(m, tmp_path / "b" / m.id, str(site))
    assert os.readlink(site / "shared") == "/srv/app/shared"
    assert site.stat().st_mode & 0o777 == 0o751
