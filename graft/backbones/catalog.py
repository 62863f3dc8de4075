"""``graft backbones``: every usable backbone name and where its weights would come from."""

import timm

from graft.backbones.timm_backbone import weights_source

_ORDER = ("package", "timm hub cache", "timm hub (online)")


def list_backbones(pretrained_only: bool = False) -> list[dict[str, str]]:
    """Rows of ``name`` and ``weights`` source, those usable offline first.

    ``pretrained_only`` drops architectures for which no pretrained weights can be had (they still work
    with ``--weights FILE`` or ``--weights random``).
    """
    rows = [] if pretrained_only else [{"name": "smallcnn", "weights": "random, or a graft run directory as --backbone"}]
    timm_rows = []
    for name in timm.list_models():
        source = weights_source(name)
        if source is None and pretrained_only:
            continue
        timm_rows.append({"name": name, "weights": source or "none (--weights FILE or --weights random)"})
    rank = {prefix: i for i, prefix in enumerate(_ORDER)}
    timm_rows.sort(key=lambda r: next((rank[p] for p in _ORDER if r["weights"].startswith(p)), len(_ORDER)))
    return rows + timm_rows
