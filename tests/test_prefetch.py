"""The next batch prepared in a background thread: in order, errors where they happened, nothing left running."""

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from graft.data.loader import make_loader
from graft.data.sources import load_image_set
from graft.errors import GraftError
from graft.inference import forward_all, forward_batches
from graft.prefetch import DEPTH, prefetched
from graft.sources import create_backbone


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "graft-prefetch"]


def test_items_come_in_order_made_ahead_in_another_thread() -> None:
    made: list[tuple[int, str]] = []
    second_made = threading.Event()

    def items() -> Iterator[int]:
        for i in range(6):
            made.append((i, threading.current_thread().name))
            if i == 1:
                second_made.set()
            yield i

    got = []
    for item in prefetched(items()):
        if item == 0:  # while the caller still holds the first item, the second is being made
            assert second_made.wait(timeout=10)
        got.append(item)
    assert got == list(range(6)) and {name for _, name in made} == {"graft-prefetch"}
    assert not prefetch_threads()


def test_an_error_in_the_producer_is_raised_at_its_item() -> None:
    def items() -> Iterator[int]:
        yield from range(3)
        raise GraftError("cannot read image x.png: truncated; remove or replace the file")

    got: list[int] = []
    with pytest.raises(GraftError, match="x.png"):
        got.extend(prefetched(items()))  # extend keeps what came before the error
    assert got == [0, 1, 2] and not prefetch_threads()


def test_a_caller_that_stops_early_stops_the_producer() -> None:
    made = []

    def items() -> Iterator[int]:
        for i in range(1000):
            made.append(i)
            yield i

    for item in prefetched(items()):
        if item == 2:
            break
    assert not prefetch_threads()
    assert len(made) <= 3 + DEPTH + 1  # the items used, the queue's, and the one in hand when told to stop


def test_a_pass_over_image_files_prefetches_and_computes_the_same(shapes: Path) -> None:
    """An inference pass from a loader without worker processes decodes the next batch in the background;
    its outputs are those of the same batches decoded beforehand, and a broken file is still one clear error."""
    images = load_image_set(shapes)
    backbone = create_backbone("smallcnn")
    loader = make_loader(images.root, images.samples, backbone.preprocessing, batch_size=8)
    seen_threads = [bool(prefetch_threads()) for _ in forward_batches(backbone, loader, "fp32")]
    assert seen_threads[0] and not prefetch_threads()  # alive while batches remain, gone after the last
    direct, labels = forward_all(backbone, list(loader), "fp32")
    prefetched_outputs, prefetched_labels = forward_all(backbone, loader, "fp32")
    torch.testing.assert_close(prefetched_outputs, direct)
    assert prefetched_labels.tolist() == labels.tolist()
    broken = images.root / images.samples[20][0]
    broken.write_bytes(broken.read_bytes()[:40])
    with pytest.raises(GraftError, match=broken.name):
        forward_all(backbone, loader, "fp32")
    assert not prefetch_threads()


def test_a_pass_stopped_by_an_error_in_the_network_leaves_no_producer_behind(shapes: Path) -> None:
    """The error's traceback holds the pass's frames (here kept, as a caller that logs it would): the producer must
    stop when the pass does, not when the generator is collected."""
    images = load_image_set(shapes)
    backbone = create_backbone("smallcnn")
    loader = make_loader(images.root, images.samples, backbone.preprocessing, batch_size=4)
    calls = [0]

    def failing(module: torch.nn.Module, inputs: tuple[torch.Tensor]) -> None:
        calls[0] += 1
        if calls[0] == 3:
            raise RuntimeError("out of memory on the third batch")

    backbone.register_forward_pre_hook(failing)
    with pytest.raises(RuntimeError, match="third batch") as kept:
        forward_all(backbone, loader, "fp32")
    assert kept.value.__traceback__ is not None and not prefetch_threads()
