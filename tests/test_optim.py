"""The training optimizer: AdamW fused into one kernel on the CPU, stepping as torch's AdamW does."""

import torch
from torch import nn

from graft.train.optim import adamw


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
