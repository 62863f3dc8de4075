"""One epoch of training, one pass of evaluation: the inner loops every phase shares."""

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from graft.device import module_device
from graft.distributed import check_interrupt
from graft.inference import autocast, grad_scaler, to_channels_last
from graft.train.depthwise import fast_depthwise


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
    scaler: torch.amp.GradScaler | None = None,
) -> EpochStats:
    """Step the optimizer over every batch; the caller has already set train/eval modes per layer.

    Batches go to ``module``'s device (``loss_fn`` must be there too). The forward pass and the loss run
    under ``precision``'s autocast (bf16 or fp16 matrix products, fp32 weights, fp32 optimizer step); see
    :mod:`graft.inference`. ``scaler`` scales fp16 losses (:func:`graft.inference.grad_scaler`); the
    caller keeps it across epochs, since its scale adapts over many steps. bf16 steps on the CPU take
    depthwise convolutions' backward through oneDNN's fast kernels (:mod:`graft.train.depthwise`).
    """
    device = module_device(module)
    scaler = scaler if scaler is not None else grad_scaler(precision, device)
    depthwise = fast_depthwise(precision, device, module)
    total_loss, correct, seen = 0.0, 0, 0
    for inputs, targets in batches:
        check_interrupt()  # Ctrl-C lands here, on every rank at the same step (graft.interrupt, graft.distributed)
        inputs = to_channels_last(inputs.to(device, non_blocking=True))
        targets = torch.as_tensor(targets).to(device, non_blocking=True)
        with autocast(precision, device):
            with depthwise:
                logits = module(inputs).float()
            loss = loss_fn(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)  # skipped where fp16 gradients overflowed; the scale then shrinks
        scaler.update()
        scheduler.step()
        total_loss += loss.item() * len(targets)
        hard = targets.argmax(1) if targets.ndim == 2 else targets  # mixed batches' labels are class probabilities
        correct += (logits.argmax(1) == hard).sum().item()
        seen += len(targets)
    return EpochStats(total_loss / max(seen, 1), correct / max(seen, 1))


def evaluate_logits(logits: torch.Tensor, labels: torch.Tensor, loss_fn: nn.Module) -> EpochStats:
    """Loss and accuracy of ``logits``, computed where ``loss_fn`` (its class weights) is."""
    device = module_device(loss_fn)
    logits, labels = logits.to(device), labels.to(device)
    return EpochStats(loss_fn(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item())
