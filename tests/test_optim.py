"""The training optimizer: AdamW fused into one kernel on the CPU, stepping as torch's AdamW does."""

import copy
from pathlib import Path

import torch
from torch import nn

from graft.train.checkpoint import load_checkpoint, save_checkpoint
from graft.train.optim import adamw, load_state


def test_fused_adamw_steps_like_the_default_one() -> None:
    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    groups = [[{"params": list(net[0].parameters()), "lr": 1e-2}, {"params": list(net[2].parameters()), "lr": 1e-1}] for net in nets]
    fused, plain = adamw(groups[0], 1e-4), torch.optim.AdamW(groups[1], weight_decay=1e-4)
    assert fused.defaults["fused"] and not plain.defaults["fused"]
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    for _ in range(5):
        for net, optimizer in zip(nets, (fused, plain), strict=True):
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            optimizer.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_resumed_fused_adamw_steps_as_the_uninterrupted_one(tmp_path: Path) -> None:
    """Channels-last weights: the checkpoint gives their moments back contiguous, and the fused kernel needs one layout."""
    torch.manual_seed(0)
    start = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 3)).to(memory_format=torch.channels_last)
    x, y = torch.randn(16, 3, 8, 8).contiguous(memory_format=torch.channels_last), torch.randint(0, 3, (16,))

    def run(net: nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> None:
        for _ in range(steps):
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            optimizer.step()

    whole = copy.deepcopy(start)
    run(whole, adamw([{"params": list(whole.parameters()), "lr": 1e-2}], 1e-4), 4)
    first = copy.deepcopy(start)
    optimizer = adamw([{"params": list(first.parameters()), "lr": 1e-2}], 1e-4)
    run(first, optimizer, 2)
    save_checkpoint(tmp_path / "c.safetensors", {"model": first.state_dict(), "optimizer": optimizer.state_dict()})
    saved = load_checkpoint(tmp_path / "c.safetensors")
    resumed = copy.deepcopy(start)
    resumed.load_state_dict(saved["model"])
    optimizer = adamw([{"params": list(resumed.parameters()), "lr": 1e-2}], 1e-4)
    load_state(optimizer, saved["optimizer"])
    run(resumed, optimizer, 2)
    assert all(torch.equal(a, b) for a, b in zip(whole.parameters(), resumed.parameters(), strict=True))
