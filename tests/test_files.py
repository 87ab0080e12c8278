"""homoecon_env.files: atomic writes with the permissions of a normal open() (docs/design.md section 7)."""
import os
import stat

import pytest

from homoecon_env import files


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_content_is_written_and_replaced(tmp_path):
    path = tmp_path / "nested" / "deeper" / "data.bin"
    assert files.atomic_write_bytes(path, b"\x00first") == str(path)
    assert path.read_bytes() == b"\x00first"
    files.atomic_write_text(path, "second é\n")
    assert path.read_bytes() == "second é\n".encode("utf-8")
    assert os.listdir(path.parent) == ["data.bin"]  # no temporary file left behind


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_old_file_is_intact_when_the_write_fails_midway(tmp_path, monkeypatch, failing):
    path = tmp_path / "report.md"
    path.write_bytes(b"old")
    written = []

    def fail(*args):
        written.extend(p.read_bytes() for p in tmp_path.glob(".report.md.*.tmp"))  # the new bytes, not yet in place
        raise OSError("disk full")

    monkeypatch.setattr(files.os, failing, fail)
    with pytest.raises(OSError, match="disk full"):
        files.atomic_write_bytes(path, b"new contents")
    monkeypatch.undo()
    assert written == [b"new contents"]
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["report.md"]  # the temporary file was removed


def test_new_and_replaced_files_get_the_permissions_open_would_give(tmp_path, umask_022):
    path = tmp_path / "figure.png"
    files.atomic_write_bytes(path, b"png")
    assert mode(path) == 0o644
    os.chmod(path, 0o600)
    files.atomic_write_text(path, "again")
    assert mode(path) == 0o644
    with open(tmp_path / "reference", "wb"):
        pass
    assert mode(path) == mode(tmp_path / "reference")


def test_a_stricter_umask_is_respected(tmp_path):
    old = os.umask(0o077)
    try:
        files.atomic_write_bytes(tmp_path / "private", b"x")
    finally:
        os.umask(old)
    assert mode(tmp_path / "private") == 0o600


def test_text_is_refused_where_bytes_are_expected(tmp_path):
    with pytest.raises(TypeError, match="expected bytes, got str"):
        files.atomic_write_bytes(tmp_path / "x", "text")
    assert not (tmp_path / "x").exists()


def test_temporaries_left_by_a_killed_write_are_recognised_and_removed(tmp_path, monkeypatch):
    """The temporary a write creates matches TEMPORARY_NAME; cleaning removes those and nothing else."""
    seen = []

    def kill(*args):  # a SIGKILL between write and rename: the temporary stays (no cleanup runs)
        seen.extend(p.name for p in tmp_path.glob(".checkpoint.pt.*.tmp"))
        monkeypatch.setattr(files.os, "unlink", lambda path: None)
        raise SystemExit("killed")

    monkeypatch.setattr(files.os, "replace", kill)
    with pytest.raises(SystemExit):
        files.atomic_write_bytes(tmp_path / "checkpoint.pt", b"half")
    monkeypatch.undo()
    assert len(seen) == 1 and files.TEMPORARY_NAME.match(seen[0])
    keep = ["checkpoint.pt.tmp", ".notes.tmp", ".x.0123456789ab.tmp.bak", "data.0123456789ab.tmp"]
    for name in keep:
        (tmp_path / name).write_text("not ours")
    (tmp_path / ".config.json.abcdef012345.tmp").write_text("stale")
    assert files.remove_stale_temporaries(tmp_path) == sorted([".config.json.abcdef012345.tmp", seen[0]])
    assert sorted(os.listdir(tmp_path)) == sorted(keep)
