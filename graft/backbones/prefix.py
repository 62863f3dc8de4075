"""A backbone split at its first trained block: the frozen prefix, whose output can be computed once, and the rest.

Where nothing changes the inputs between epochs (no augmentation) and the first blocks are frozen (in
inference mode, so no dropout and fixed BatchNorm statistics), those blocks give the same output for an
image every epoch: ``finetune --unfreeze 2`` on lite0 spends most of each step in the frozen stem and
first five stages. :func:`split_frozen_prefix` cuts the backbone there, so the trainer can compute the
prefix once per image and step only the trained blocks (:mod:`graft.train.trainer`).

No backbone library offers "run from stage k" (timm has ``forward_intermediates``, which stops at a stage but
always starts from the image), so the backbone is traced with :mod:`torch.fx` at the granularity of its
blocks (:meth:`graft.backbones.base.Backbone.blocks`): each block's modules, and every module without
parameters, stay whole calls (their own ``forward``, so train/eval modes keep working), and the traced graph
is the glue between them. The cut is the one value flowing from the frozen blocks into the rest; a network
where more than one does (a skip connection across the cut), or that fx cannot trace, is not split, and
trains as before. Both parts share the backbone's own modules: no weight is copied.
"""

import torch
from torch import fx, nn

from graft.backbones.base import Backbone


class _BlockTracer(fx.Tracer):
    """Traces down to modules whose parameters all belong to one block, and to modules without parameters:
    those stay single calls."""

    def __init__(self, owner: dict[int, int]) -> None:
        super().__init__()
        self.owner = owner  # parameter id -> index of its block

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return len({self.owner[id(p)] for p in m.parameters()}) <= 1


def frozen_blocks(backbone: Backbone) -> int:
    """How many of the backbone's first blocks have no trainable parameter."""
    count = 0
    for block in backbone.blocks():
        if any(p.requires_grad for p in block.parameters()):
            break
        count += 1
    return count


def split_frozen_prefix(backbone: Backbone, frozen: int) -> tuple[fx.GraphModule, fx.GraphModule] | None:
    """``(prefix, rest)`` with ``rest(prefix(x)) == backbone(x)``, cut before block ``frozen``; ``None`` where it cannot be cut.

    Checked on two random images in inference mode before it is returned, so a graph that traced but does
    not compute what the backbone computes is never used.
    """
    blocks = backbone.blocks()
    if not 0 < frozen < len(blocks):
        return None
    owner = {id(p): i for i, block in enumerate(blocks) for p in block.parameters()}
    try:
        graph = _BlockTracer(owner).trace(backbone)
    except Exception:  # noqa: BLE001 (data-dependent control flow, an operation fx cannot record: not split, trained whole)
        return None
    if any(node.op == "call_function" and "dropout" in getattr(node.target, "__name__", "") for node in graph.nodes):
        return None  # a functional dropout between blocks: fx records train or eval as a constant, so it is not split
    modules = dict(backbone.named_modules())
    params = {name: id(p) for name, p in backbone.named_parameters()}

    def block_of(node: fx.Node) -> int | None:
        """The block a call or a parameter read belongs to; None for glue and modules without parameters."""
        if node.op == "call_module":
            return next((owner[id(p)] for p in modules[str(node.target)].parameters()), None)
        if node.op == "get_attr" and str(node.target) in params:
            return owner[params[str(node.target)]]
        return None

    nodes = list(graph.nodes)
    owners = [block_of(node) for node in nodes]
    first = next((i for i, b in enumerate(owners) if b is not None and b >= frozen), None)
    if first is None or any(b is not None and b < frozen for b in owners[first:]):
        return None
    later = set(nodes[first:])
    crossing = [n for n in nodes[:first] if n.op != "get_attr" and any(user in later for user in n.users)]
    if len(crossing) != 1 or crossing[0].op == "placeholder":
        return None
    cut = crossing[0]

    head = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in nodes[: nodes.index(cut) + 1]:
        env[node] = head.node_copy(node, env.__getitem__)
    head.output(env[cut])

    tail = fx.Graph()
    env = {cut: tail.placeholder("features")}
    for node in nodes[first:]:
        for arg in node.all_input_nodes:
            if arg not in env:  # a parameter or buffer read before the cut: read it again here
                env[arg] = tail.node_copy(arg, env.__getitem__)
        env[node] = tail.node_copy(node, env.__getitem__)
    prefix, rest = fx.GraphModule(backbone, head), fx.GraphModule(backbone, tail)
    for part in (prefix, rest):
        part.graph.eliminate_dead_code()
        part.recompile()
    return (prefix, rest) if _agrees(backbone, prefix, rest) else None


def _agrees(backbone: Backbone, prefix: nn.Module, rest: nn.Module) -> bool:
    """Whether ``rest(prefix(x))`` is ``backbone(x)`` on two random images, every module in inference mode."""
    modes = {m: m.training for m in backbone.modules()}
    backbone.eval()
    try:
        generator = torch.Generator().manual_seed(0)  # not the global one: training's random draws stay as they were
        x = torch.randn(2, *backbone.preprocessing.input_size, generator=generator).to(next(backbone.parameters()).device)
        with torch.no_grad():
            return bool(torch.allclose(rest(prefix(x)), backbone(x), rtol=1e-4, atol=1e-5))
    except Exception:  # noqa: BLE001 (a graph that does not run: not split)
        return False
    finally:
        for m, training in modes.items():
            m.training = training
