"""The built-in photos data set: real photos the wheels ship, cropped the same way on every build."""

from pathlib import Path

from graft.data.builtin import BUILTIN, PHOTO_CROPS


def test_photos_build_is_deterministic(tmp_path: Path) -> None:
    for name in ("a", "b"):
        BUILTIN["photos"].build(tmp_path / name)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.jpg"))
    assert len(files) == 6 * PHOTO_CROPS and {f.parent.name for f in files} == {
        "astronaut",
        "chelsea",
        "china",
        "coffee",
        "flower",
        "rocket",
    }
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
