"""The optimizer every trained phase steps: AdamW, fused into one kernel where torch has one for the device.

torch's default AdamW on the CPU loops over the parameters tensor by tensor; the fused kernel (CPU, CUDA,
MPS) updates them all at once. Measured on lite0's 3.4 million parameters (two cores, AVX-512): 15.3 ms a
step with the default, 13.1 ms with ``foreach``, 2.7 ms fused. Its arithmetic is AdamW's, so a run's
results change only in the last bits; a run and its resume use the same kernel, so resuming stays exact.
"""

import torch
from torch.optim.optimizer import _get_fused_kernels_supported_devices


def adamw(groups: list[dict], weight_decay: float) -> torch.optim.AdamW:
    """AdamW over ``groups``, fused where every parameter is a floating-point tensor on a device with the kernel."""
    params = [p for g in groups for p in g["params"]]
    fused = bool(params) and all(
        p.is_floating_point() and p.device.type in _get_fused_kernels_supported_devices() and p.device == params[0].device for p in params
    )
    return torch.optim.AdamW(groups, weight_decay=weight_decay, fused=fused or None)


def load_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """``optimizer.load_state_dict(state)``, each state tensor then laid out as its parameter is.

    A checkpoint stores values, not strides, so moments saved from channels-last weights come back
    contiguous; the fused kernel walks a parameter, its gradient and its moments as flat memory and needs
    them in one layout, or a resumed run would pair the wrong elements.
    """
    optimizer.load_state_dict(state)
    for param, values in optimizer.state.items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor) and value.shape == param.shape and value.stride() != param.stride():
                values[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)
