"""One epoch of training, one pass of evaluation: the inner loops every phase shares."""

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from graft.inference import autocast, to_channels_last
from graft.interrupt import check


@dataclass
class EpochStats:
    loss: float
    accuracy: float


def train_epoch(
    module: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loss_fn: nn.Module,
    precision: str = "auto",
) -> EpochStats:
    """Step the optimizer over every batch; the caller has already set train/eval modes per layer.

    The forward pass and the loss run under ``precision``'s autocast (bf16 matrix products, fp32
    weights, fp32 optimizer step); see :mod:`graft.inference`.
    """
    total_loss, correct, seen = 0.0, 0, 0
    for inputs, targets in batches:
        check()  # Ctrl-C lands here (graft.interrupt)
        targets = torch.as_tensor(targets)
        with autocast(precision):
            logits = module(to_channels_last(inputs)).float()
            loss = loss_fn(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total_loss += loss.item() * len(targets)
        correct += (logits.argmax(1) == targets).sum().item()
        seen += len(targets)
    return EpochStats(total_loss / max(seen, 1), correct / max(seen, 1))


def evaluate_logits(logits: torch.Tensor, labels: torch.Tensor, loss_fn: nn.Module) -> EpochStats:
    return EpochStats(loss_fn(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item())
