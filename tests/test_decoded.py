"""Decode once: the in-memory uint8 store gives the batches decoding the files gives, within its bound."""

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from graft.data import decoded
from graft.data.decoded import ENV, DecodedImages, budget_mb, threaded_map
from graft.data.images import load_image
from graft.data.loader import make_loader
from graft.data.sources import load_image_set
from graft.data.transforms import Preprocessing, build_transform
from graft.errors import GraftError
from tests.conftest import make_shapes

PRE = Preprocessing(input_size=(3, 24, 24), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop_pct=0.875)


def batches(root: Path, samples: list, augment: str, store: DecodedImages | None, seed: int = 3) -> list[torch.Tensor]:
    torch.manual_seed(seed)  # augmentation draws from the global generator, in the main process
    loader = make_loader(root, samples, PRE, batch_size=8, augment=augment, shuffle=True, seed=seed, store=store)
    return [x for x, _ in loader]


@pytest.mark.parametrize("augment", ["none", "light", "strong"])
def test_stored_images_give_the_batches_files_give(tmp_path: Path, augment: str) -> None:
    images = load_image_set(make_shapes(tmp_path / "data", per_class=8, mode="RGB"))
    store = DecodedImages(budget=64)
    from_store = batches(images.root, images.samples, augment, store)
    assert len(store.tensors) == len(images.samples) and not store.beyond
    assert all(t.dtype == torch.uint8 for t in store.tensors.values())
    from_files = batches(images.root, images.samples, augment, None)
    assert all(torch.equal(a, b) for a, b in zip(from_store, from_files, strict=True))
    # The same images and random draws as the one-piece transform, applied one image at a time in order.
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # decoding and normalising in threads, augmenting in order between them
    try:
        torch.manual_seed(5)
        loader = make_loader(images.root, images.samples, PRE, batch_size=8, augment=augment, store=store)
        split_up = torch.cat([x for x, _ in loader])
    finally:
        torch.set_num_threads(threads)
    torch.manual_seed(5)
    whole = build_transform(PRE, augment)
    assert torch.equal(split_up, torch.stack([whole(load_image(images.root / path, 3, side=27)) for path, _ in images.samples]))


def test_the_store_stays_within_its_bound_and_the_rest_decodes_from_files(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    images = load_image_set(make_shapes(tmp_path / "data", per_class=10, mode="RGB"))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # decoding in threads: results still in order
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    per_image = 3 * 24 * 24
    store = DecodedImages(budget=5.5 * per_image / 2**20)  # room for 5 of the 30 images
    bounded = batches(images.root, images.samples, "light", store)
    assert len(store.tensors) == 5 and store.used == 5 * per_image
    assert len(store.beyond) == 25
    assert "25 beyond it are decoded from their files" in (store.summary() or "")
    assert store.summary() is None  # said once
    assert all(torch.equal(a, b) for a, b in zip(bounded, batches(images.root, images.samples, "light", None), strict=True))


def test_the_bound_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "12.5")
    assert budget_mb() == 12.5 and DecodedImages().budget == 12.5
    for bad in ("lots", "-1", "nan"):
        monkeypatch.setenv(ENV, bad)
        with pytest.raises(GraftError, match=ENV):
            budget_mb()
    monkeypatch.delenv(ENV)
    assert budget_mb() > 0


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_that_still_covers_the_target(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8), np.ones((32, 32, 1), dtype=np.uint8))  # 960x1280
    Image.fromarray(smooth).save(tmp_path / "big.jpg", quality=95)
    full, reduced = load_image(tmp_path / "big.jpg", 3), load_image(tmp_path / "big.jpg", 3, side=224)
    assert full.size == (1280, 960)
    assert reduced.size == (320, 240)  # 1/4 scale: 1/8 would give 120 < 224 on the shorter side
    resized = [np.asarray(build_transform(PRE)(img).numpy()) for img in (full, reduced)]
    assert np.abs(resized[0] - resized[1]).mean() < 0.05  # normalised units: the same picture
    Image.fromarray(smooth[:400, :400]).save(tmp_path / "small.jpg")
    assert load_image(tmp_path / "small.jpg", 3, side=224).size == (400, 400)  # under twice the side: decoded whole


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="with one thread threaded_map is the plain loop")
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts the process's threads through Linux's /proc")
def test_decoding_threads_run_torch_on_one_openmp_thread_and_start_no_teams(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(torch.get_num_threads())  # as graft does under torch.distributed: a count torch sets in each new thread
    monkeypatch.setattr(decoded, "_pool", None)  # threads started after it, not kept from an earlier test
    x = torch.rand(16, 3, 224, 224)  # large enough for torch to split each item's kernels over an OpenMP team
    (x * 2).sum()  # the calling thread's own team, started before counting
    before = len(list(Path("/proc/self/task").iterdir()))

    def where(index: int) -> tuple[int, int, torch.Tensor]:
        return threading.get_ident(), torch.get_num_threads(), (x[index] * 2 - 1).sum()

    for _ in range(2):
        done = threaded_map(where, list(range(len(x))))
        assert {ident for ident, _, _ in done} - {threading.get_ident()}  # the items ran in other threads
        assert {openmp for _, openmp, _ in done} == {1}  # each on its own OpenMP thread only
        assert torch.stack([total for _, _, total in done]).allclose((x * 2 - 1).sum((1, 2, 3)))  # in order
    assert len(list(Path("/proc/self/task").iterdir())) <= before + torch.get_num_threads()  # the pool's threads, no teams
    assert torch.get_num_threads() > 1  # the calling thread's count is its own
    decoded._pool[1].shutdown()  # this test's pool; the one it replaced comes back
