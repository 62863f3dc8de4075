"""The images users really have: damaged, odd modes, huge headers, odd names, loops. None stops a fit."""

import json
import os
import shutil
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from graft import cli
from graft.data.images import load_image
from graft.data.sources import load_image_set
from graft.errors import GraftError
from tests.conftest import draw_shape, make_shapes
from tests.test_cli import graft

USABLE = ("cmyk.jpg", "sixteen-bit.png", "palette-transparent.png", "one-pixel.png", "ünïcødé 图像.png", "  spaced  name .png")
UNUSABLE = ("truncated.jpg", "zero-bytes.png", "text.png", "bomb.png", "loop-a.png", "loop-b.png")


def png_header_only(path: Path, width: int, height: int) -> None:
    """A valid PNG signature and header declaring ``width`` x ``height`` pixels, with one row of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1))) + chunk(b"IEND", b"")
    )


def add_corpus(folder: Path, case: str) -> None:
    """Write the bad-input case ``case`` into ``folder`` (a class folder of an image set)."""
    rng = np.random.default_rng(1)
    shape = draw_shape("bar", rng)
    if case == "truncated.jpg":
        Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(folder / case, quality=90)
        data = (folder / case).read_bytes()
        (folder / case).write_bytes(data[: len(data) // 2])
    elif case == "zero-bytes.png":
        (folder / case).write_bytes(b"")
    elif case == "text.png":
        (folder / case).write_text("this is a text file with an image's name\n")
    elif case == "bomb.png":
        png_header_only(folder / case, 20_000, 20_000)
    elif case == "loop-a.png":  # and loop-b.png: each a symlink to the other
        os.symlink("loop-b.png", folder / "loop-a.png")
        os.symlink("loop-a.png", folder / "loop-b.png")
    elif case == "cmyk.jpg":
        shape.convert("CMYK").save(folder / case)
    elif case == "sixteen-bit.png":
        Image.fromarray(np.asarray(shape).astype(np.uint16) * 257).save(folder / case)
    elif case == "palette-transparent.png":
        shape.convert("P").save(folder / case, transparency=0)
    elif case == "one-pixel.png":
        Image.new("L", (1, 1), 200).save(folder / case)
    else:  # unicode and space-filled names
        shape.save(folder / case)


def corpus(root: Path) -> Path:
    """The shapes data set with every bad-input case in it, an empty class folder and a folder link loop."""
    make_shapes(root, per_class=12)
    for case in USABLE + UNUSABLE[:-1]:  # loop-a.png brings loop-b.png
        add_corpus(root / "bar", case)
    (root / "empty").mkdir()
    os.symlink("..", root / "ring" / "up")  # ring/up/ring/up/... never ends if followed
    (root / "cross" / ".DS_Store").write_bytes(b"\0\0junk")
    (root / "cross" / "notes.txt").write_text("not an image")
    return root


def test_skip_keeps_every_usable_image_and_lists_the_rest(tmp_path: Path) -> None:
    images = load_image_set(corpus(tmp_path / "data"))
    assert images.classes == ["bar", "cross", "ring"] and images.empty_classes == ["empty"]
    assert sorted(Path(p).name for p, _ in images.bad) == sorted(UNUSABLE)
    kept = {Path(p).name for p, _ in images.samples}
    assert set(USABLE) <= kept and not kept & set(UNUSABLE)
    assert len(images.samples) == 36 + len(USABLE)
    reasons = {Path(p).name: why for p, why in images.bad}
    assert "truncated" in reasons["truncated.jpg"] and "decompression bomb" in reasons["bomb.png"]
    assert "symbolic links" in reasons["loop-a.png"] and "not an image" in reasons["text.png"]


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``graft ARGS`` in this process (as the console script runs it): exit code and stderr."""
    monkeypatch.setattr(sys, "argv", ["graft", *args])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    return exited.value.code, capsys.readouterr().err


@pytest.mark.parametrize("case", [*UNUSABLE[:-1], "empty class folder"])
def test_fail_policy_stops_with_one_line_naming_the_file(
    tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_shapes(tmp_path / "data", per_class=4)
    if case == "empty class folder":
        (data / "empty").mkdir()
    else:
        add_corpus(data / "ring", case)
    code, err = run_cli(monkeypatch, capsys, "fit", str(data), "--bad-images", "fail", "--out", str(tmp_path / "run"))
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert ("empty has no images" if case == "empty class folder" else f"{case}:") in err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_class_with_no_readable_image_is_an_error_under_either_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_shapes(tmp_path / "data", per_class=4)
    (data / "broken").mkdir()
    for case in ("zero-bytes.png", "text.png"):
        add_corpus(data / "broken", case)
    code, err = run_cli(monkeypatch, capsys, "fit", str(data))
    assert code == 2 and "broken has 2 image file(s) and none can be read" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_fit_with_skip_runs_through_the_whole_corpus(tmp_path: Path) -> None:
    data = corpus(tmp_path / "data")
    run = tmp_path / "run"
    fitted = graft("fit", str(data), "--epochs", "1", "--batch-size", "8", "--out", str(run), "--json")
    assert fitted.returncode == 0, fitted.stderr
    assert "Traceback" not in fitted.stderr
    warnings = [line for line in fitted.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2 and "skipped 6 unreadable image(s)" in warnings[0] and "empty" in warnings[1], fitted.stderr
    report = json.loads((run / "bad_images.json").read_text())
    assert report["count"] == 6 and sorted(Path(p).name for p, _ in report["images"]) == sorted(UNUSABLE)
    assert report["empty_classes"] == ["empty"]
    predicted = graft("predict", str(run), str(data / "bar" / USABLE[-2]), "--json")
    assert predicted.returncode == 0 and json.loads(predicted.stdout)[0]["path"].endswith(USABLE[-2])


# What a CSV row can name that a folder cannot: a file that is not there, one outside the CSV's folder, no class.
CSV_CASES = {
    "truncated image": "truncated",
    "missing file": "missing file",
    "../ path": "outside the CSV's folder",
    "absolute path outside": "outside the CSV's folder",
    "empty label": "empty label",
}


def shapes_csv(root: Path, per_class: int = 4) -> Path:
    """``root/list.csv`` listing the shapes data set in ``root/shapes``, paths relative to the CSV's folder."""
    data = make_shapes(root / "shapes", per_class=per_class)
    rows = [f"shapes/{p.parent.name}/{p.name},{p.parent.name}" for p in sorted(data.rglob("*.png"))]
    (root / "list.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    return root / "list.csv"


def add_bad_row(csv: Path, case: str) -> str:
    """Append the bad row ``case`` to ``csv``; the path the row names, as written. Outside images exist."""
    folder, shape = csv.parent, draw_shape("ring", np.random.default_rng(2))
    label = "ring"
    if case == "truncated image":
        add_corpus(folder / "shapes" / "bar", "truncated.jpg")
        path = "shapes/bar/truncated.jpg"
    elif case == "missing file":
        path = "shapes/ring/gone.png"
    elif case == "../ path":
        shape.save(folder.parent / "outside.png")
        path = "../outside.png"
    elif case == "absolute path outside":
        shape.save(folder.parent / "elsewhere.png")
        path = str(folder.parent / "elsewhere.png")
    else:  # an empty label
        shape.save(folder / "shapes" / "unlabelled.png")
        path, label = "shapes/unlabelled.png", ""
    with csv.open("a") as fh:
        fh.write(f"{path},{label}\n")
    return path


def test_skip_leaves_bad_csv_rows_out_and_lists_each_with_its_reason(tmp_path: Path) -> None:
    csv = shapes_csv(tmp_path / "data")
    written = [add_bad_row(csv, case) for case in CSV_CASES]
    images = load_image_set(csv)
    assert images.classes == ["bar", "cross", "ring"] and len(images.samples) == 12
    assert all((images.root / p).resolve().is_relative_to(csv.parent) for p, _ in images.samples)
    assert [p for p, _ in images.bad] == written  # in the order of the rows, as the CSV writes them
    for (path, why), reason in zip(images.bad, CSV_CASES.values(), strict=True):
        assert reason in why, (path, why)


@pytest.mark.parametrize("case", list(CSV_CASES))
def test_fail_refuses_a_bad_csv_row_naming_it_its_line_and_the_fix(tmp_path: Path, case: str) -> None:
    csv = shapes_csv(tmp_path / "data")
    path = add_bad_row(csv, case)
    with pytest.raises(GraftError) as refused:
        load_image_set(csv, bad_images="fail")
    message = str(refused.value)
    assert path in message and CSV_CASES[case] in message and "line 14" in message, message  # header, 12 rows, then this one
    assert "or pass --bad-images skip" in message and "\n" not in message


def test_a_csv_class_with_no_usable_row_is_an_error_under_skip(tmp_path: Path) -> None:
    csv = shapes_csv(tmp_path / "data")
    with csv.open("a") as fh:
        fh.write("shapes/cat/gone.png,cat\n")
    with pytest.raises(
        GraftError, match=r"class 'cat' in \S+list.csv has 1 image file\(s\) and none can be read \(gone.png: missing file\)"
    ):
        load_image_set(csv)


@pytest.mark.slow
def test_fit_on_a_csv_writes_its_bad_rows_to_bad_images_json(tmp_path: Path) -> None:
    csv = shapes_csv(tmp_path / "data", per_class=12)
    written = [add_bad_row(csv, case) for case in CSV_CASES]
    run = tmp_path / "run"
    fitted = graft(
        "fit", str(csv), "--backbone", "smallcnn", "--strategy", "scratch", "--epochs", "1", "--batch-size", "8", "--out", str(run)
    )
    assert fitted.returncode == 0, fitted.stderr
    report = json.loads((run / "bad_images.json").read_text())
    assert report["policy"] == "skip" and report["count"] == len(CSV_CASES)
    assert [p for p, _ in report["images"]] == written and "missing file" in dict(report["images"])["shapes/ring/gone.png"]


def modes(tmp_path: Path) -> dict[str, Path]:
    """One file per mode graft must convert; each with a transparent/white, black and grey pixel."""
    files = {}
    for mode, pixels in {
        "RGBA": [(0, 0, 0, 0), (0, 0, 0, 255), (128, 128, 128, 255)],
        "LA": [(0, 0), (0, 255), (128, 255)],
        "CMYK": [(0, 0, 0, 0), (0, 0, 0, 255), (0, 0, 0, 127)],
        "I;16": [65535, 0, 32896],
        "1": [1, 0, None],
    }.items():
        img = Image.new(mode, (3, 1))
        for x, value in enumerate(pixels):
            if value is not None:
                img.putpixel((x, 0), value)
        files[mode] = tmp_path / f"{mode.replace(';', '')}.{'tif' if mode == 'CMYK' else 'png'}"
        img.save(files[mode])
    palette = Image.new("P", (3, 1))
    palette.putpalette([9, 9, 9, 0, 0, 0, 128, 128, 128])
    palette.putdata([0, 1, 2])
    files["P"] = tmp_path / "P.png"
    palette.save(files["P"], transparency=0)
    return files


def test_every_mode_converts_with_transparency_on_white(tmp_path: Path) -> None:
    for mode, path in modes(tmp_path).items():
        with Image.open(path) as raw:
            assert raw.mode == mode
        for channels, target in ((3, "RGB"), (1, "L")):
            img = load_image(path, channels)
            assert img.mode == target and img.size == (3, 1)
            values = [img.getpixel((x, 0)) for x in range(3)]
            grey = [v if channels == 1 else v[0] for v in values]
            assert grey[0] == 255 and grey[1] == 0, (mode, values)  # transparent or white -> white; black stays black
            if mode != "1":
                assert 120 <= grey[2] <= 136, (mode, values)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 20), (255, 255, 255))
    img.paste((0, 0, 0), (0, 0, 10, 20))  # black on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display turned 90 degrees clockwise
    img.save(tmp_path / "rotated.jpg", exif=exif)
    loaded = load_image(tmp_path / "rotated.jpg", 3)
    assert loaded.size == (20, 40)
    assert loaded.getpixel((10, 2))[0] < 60 and loaded.getpixel((10, 37))[0] > 200  # the black edge is now on top


def test_a_link_loop_and_hidden_files_do_not_hang_the_scan(tmp_path: Path) -> None:
    data = make_shapes(tmp_path / "data", per_class=4)
    os.symlink("..", data / "bar" / "loop")
    shutil.copytree(data / "ring", data / "bar" / ".hidden")
    images = load_image_set(data)
    assert len(images.samples) == 12 and not images.bad
