"""One epoch of training, one pass of evaluation: the inner loops every phase shares."""

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn


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
) -> EpochStats:
    """Step the optimizer over every batch; the caller has already set train/eval modes per layer."""
    total_loss, correct, seen = 0.0, 0, 0
    for inputs, targets in batches:
        targets = torch.as_tensor(targets)
        logits = module(inputs)
        loss = loss_fn(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total_loss += loss.item() * len(targets)
        correct += (logits.argmax(1) == targets).sum().item()
        seen += len(targets)
    return EpochStats(total_loss / max(seen, 1), correct / max(seen, 1))


@torch.inference_mode()
def predict_logits(module: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, labels)`` over every batch, with the module in inference mode."""
    was_training = module.training
    module.eval()
    try:
        logits, labels = [], []
        for inputs, targets in batches:
            logits.append(module(inputs).float())
            labels.append(torch.as_tensor(targets))
        return torch.cat(logits), torch.cat(labels)
    finally:
        module.train(was_training)


def evaluate_logits(logits: torch.Tensor, labels: torch.Tensor, loss_fn: nn.Module) -> EpochStats:
    return EpochStats(loss_fn(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item())
