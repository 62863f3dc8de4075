"""Built-in data sets (generated Devanagari, Fashion-MNIST's IDX files), DHCD's Train/Test layout and CSV sources."""

import gzip
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from graft.data import devanagari
from graft.data.fashion import FASHION_DIR, read_idx, write_fashion
from graft.data.sources import load_image_set
from graft.data.split import make_split
from graft.errors import GraftError
from tests.conftest import make_shapes
from tests.test_cli import graft


def test_generated_devanagari_is_dhcd_shaped_and_reproducible(tmp_path: Path) -> None:
    devanagari.generate(tmp_path / "a", train_per_class=2, test_per_class=1, seed=0)
    devanagari.generate(tmp_path / "b", train_per_class=2, test_per_class=1, seed=0)
    devanagari.generate(tmp_path / "c", train_per_class=2, test_per_class=1, seed=1)
    images = load_image_set(tmp_path / "a")
    assert len(images.classes) == 46 and images.test_folder == "Test"
    assert {"character_1_ka", "character_10_yna", "character_34_chhya", "character_36_gya", "digit_0", "digit_9"} <= set(images.classes)
    assert Counter(p.split("/")[0] for p, _ in images.samples) == {"Train": 92, "Test": 46}
    from PIL import Image

    with Image.open(tmp_path / "a" / images.samples[0][0]) as first:
        assert first.size == (32, 32) and first.mode == "L"
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    same = [(tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files]
    other = [(tmp_path / "a" / f).read_bytes() == (tmp_path / "c" / f).read_bytes() for f in files]
    assert all(same) and not any(other)


def test_devanagari_renders_conjuncts_as_one_shaped_glyph() -> None:
    """With raqm, क्ष is one ligature, narrower than क, virama and ष set side by side."""
    fonts = devanagari.font_files()
    font = devanagari._font(fonts[0])
    shaped = font.getbbox("क्ष")
    unshaped = [font.getbbox(c) for c in ("क", "्", "ष")]
    assert shaped[2] - shaped[0] < sum(b[2] - b[0] for b in unshaped)


def dhcd_tree(root: Path, train: int = 6, test: int = 3) -> Path:
    """A DHCD-style folder: Train/ and Test/, the same three class sub-folders in each."""
    make_shapes(root / "Train", per_class=train, seed=0)
    make_shapes(root / "Test", per_class=test, seed=1)
    return root


def test_dhcd_layout_uses_its_test_folder_as_the_test_split(tmp_path: Path) -> None:
    images = load_image_set(dhcd_tree(tmp_path / "dhcd", train=10, test=3))
    assert images.classes == ["bar", "cross", "ring"] and images.test_folder == "Test"
    split = make_split(images, seed=0)
    assert sorted(split.test) == sorted(s for s in images.samples if s[0].startswith("Test/"))
    assert all(p.startswith("Train/") for p, _ in split.train + split.val)
    assert len(split.train) + len(split.val) == 30 and Counter(y for _, y in split.val) == {0: 1, 1: 1, 2: 1}
    # --per-class trims the training part only; validation and test stay exactly as they were.
    small = make_split(images, seed=0, per_class=2)
    assert Counter(y for _, y in small.train) == {0: 2, 1: 2, 2: 2}
    assert set(small.train) <= set(split.train) and (small.val, small.test) == (split.val, split.test)
    assert set(make_split(images, seed=0, per_class=1).train) <= set(small.train)  # nested subsets
    # Selecting classes narrows both parts.
    two = make_split(load_image_set(tmp_path / "dhcd", "ring,bar"), seed=0)
    assert {p.split("/")[1] for p, _ in two.test} == {"ring", "bar"}


def test_dhcd_layout_with_a_test_class_missing_from_train(tmp_path: Path) -> None:
    root = dhcd_tree(tmp_path / "dhcd")
    shutil.copytree(root / "Test" / "ring", root / "Test" / "wave")
    with pytest.raises(GraftError, match="Test has classes that .*Train lacks: wave"):
        load_image_set(root)


def write_idx(path: Path, array: np.ndarray, type_byte: int = 0x08) -> Path:
    header = bytes([0, 0, type_byte, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def test_idx_reader_parses_and_rejects_damaged_files(tmp_path: Path) -> None:
    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    assert np.array_equal(read_idx(write_idx(tmp_path / "x-idx3-ubyte.gz", images)), images)
    floats = np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3)
    assert np.array_equal(read_idx(write_idx(tmp_path / "f.idx", floats, 0x0D)), floats)

    raw = (tmp_path / "f.idx").read_bytes()
    (tmp_path / "cut.idx").write_bytes(raw[:-5])
    with pytest.raises(GraftError, match=r"cut.idx is truncated: 31 bytes where shape \(2, 3\) of float32 needs 36"):
        read_idx(tmp_path / "cut.idx")
    (tmp_path / "header.idx").write_bytes(raw[:6])
    with pytest.raises(GraftError, match="header.idx is truncated"):
        read_idx(tmp_path / "header.idx")
    (tmp_path / "cut.gz").write_bytes((tmp_path / "x-idx3-ubyte.gz").read_bytes()[:-12])
    with pytest.raises(GraftError, match="cannot read IDX file .*cut.gz"):
        read_idx(tmp_path / "cut.gz")
    (tmp_path / "text.idx").write_text("path,label\n")
    with pytest.raises(GraftError, match="text.idx is not an IDX file"):
        read_idx(tmp_path / "text.idx")


def test_fashion_is_written_in_the_official_train_test_layout(tmp_path: Path) -> None:
    source = tmp_path / "idx"
    source.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 4)):
        write_idx(source / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(source / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n, dtype=np.uint8) % 2)
    write_fashion(tmp_path / "out", source)
    images = load_image_set(tmp_path / "out")
    assert images.classes == ["0", "1"] and images.test_folder == "Test"
    assert Counter(p.split("/")[0] for p, _ in images.samples) == {"Train": 12, "Test": 4}
    with pytest.raises(GraftError, match="apt-get install -y --no-install-recommends dataset-fashion-mnist"):
        write_fashion(tmp_path / "none", tmp_path / "nowhere")


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed (.ci/run installs it)")
def test_debian_fashion_mnist_files_parse() -> None:
    labels = read_idx(FASHION_DIR / "t10k-labels-idx1-ubyte.gz")
    images = read_idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz")
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [1000] * 10


def test_csv_of_paths_and_labels_is_a_data_source(tmp_path: Path, shapes: Path) -> None:
    rows = ["path,label"] + [f"shapes/{p.parent.name}/{p.name},{p.parent.name.upper()}" for p in sorted(shapes.rglob("*.png"))]
    csv = tmp_path / "data.csv"
    csv.write_text("\n".join(rows) + "\n")
    images = load_image_set(csv)
    assert images.root == tmp_path and images.classes == ["BAR", "CROSS", "RING"]
    assert len(images.samples) == 60 and all((tmp_path / p).is_file() for p, _ in images.samples)
    assert load_image_set(csv, "RING,BAR").classes == ["RING", "BAR"]
    csv.write_text("shapes/bar/000.png\n")
    with pytest.raises(GraftError, match="line 1: expected two columns"):
        load_image_set(csv)


def test_fit_on_a_dhcd_tree_with_per_class_through_the_cli(tmp_path: Path) -> None:
    root = dhcd_tree(tmp_path / "dhcd", train=10, test=4)
    out = tmp_path / "run"
    result = graft("fit", str(root), "--strategy", "scratch", "--epochs", "1", "--per-class", "4", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    split = json.loads((out / "split.json").read_text())
    assert Counter(y for _, y in split["train"]) == {0: 4, 1: 4, 2: 4}
    assert sorted(p for p, _ in split["test"]) == sorted(p.relative_to(root).as_posix() for p in (root / "Test").rglob("*.png"))
    with pytest.raises(GraftError, match="--per-class 0"):
        make_split(load_image_set(root), per_class=0)


@pytest.mark.slow
def test_sweep_compares_every_size_on_the_same_validation_and_test_images(tmp_path: Path) -> None:
    from graft.experiments import sweep
    from graft.train.settings import TrainSettings

    root = dhcd_tree(tmp_path / "dhcd", train=12, test=4)
    sizes = {3: TrainSettings(epochs=1), None: TrainSettings(epochs=1)}
    rows = sweep(str(root), [("smallcnn", "smallcnn", ["frozen"], None)], sizes, tmp_path / "out")
    assert [(r["per_class"], r["strategy"]) for r in rows] == [("3", "frozen"), ("all", "frozen")]
    splits = [json.loads((Path(r["run_dir"]) / "split.json").read_text()) for r in rows]
    assert len({json.dumps((s["val"], s["test"])) for s in splits}) == 1
    assert [len(s["train"]) for s in splits] == [9, 32]  # 3 a class; 36 less 4 for validation
    assert (tmp_path / "out" / "experiment.csv").read_text().startswith("per_class,backbone,strategy,test_accuracy")
