import pytest

from ptxssl.files import atomic_path, write_json


def test_atomic_path_renames_only_on_success(tmp_path):
    dest = tmp_path / "out.csv"
    with atomic_path(dest) as tmp:
        tmp.write_text("a,b\n")
        assert not dest.exists()  # nothing visible under the final name while writing
        assert tmp.suffix == ".tmp" and tmp.parent == tmp_path
    assert dest.read_text() == "a,b\n"
    assert list(tmp_path.iterdir()) == [dest]


def test_atomic_path_leaves_old_file_and_no_temp_when_killed_midway(tmp_path):
    dest = tmp_path / "metrics.json"
    write_json(dest, {"dice": 0.5})
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(dest) as tmp:
            tmp.write_text('{"dice": 0.')  # half-written
            raise KeyboardInterrupt
    assert dest.read_text().strip().endswith("}")  # the complete old file survives
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
