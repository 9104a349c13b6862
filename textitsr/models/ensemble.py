"""Join models trained apart (one seed each) into one model whose similarity is their mean.

Why: the mean similarity of three seeds' heads beat single heads by about 2 mR on every fold of the
leave-source-out protocol (benchmarks/results/real-leave-source-out.md). The models share the frozen
encoders and a parameter-free fusion (GFF), so only their projection heads differ: joined into one
`heads.ProjectionEnsemble` per modality, they give one vector per item, and every index, export and
search path works unchanged. Probes are fitted on the joined model afterwards (`training.probes`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from textitsr.errors import InputError
from textitsr.models.heads import ProjectionEnsemble
from textitsr.models.probes import ProbedHead, probe_width
from textitsr.models.textitsr import TextITSR


def _projection(head: torch.nn.Module) -> torch.nn.Module:
    return head.projection if isinstance(head, ProbedHead) else head


def join_heads(models: Sequence[TextITSR]) -> TextITSR:
    """One model whose pair and text projections are the `models`' heads side by side (their
    probes are left unfitted: fit them on the joined model)."""
    if len(models) < 2:
        raise InputError(f"joining heads: need at least 2 models, got {len(models)}")
    config = models[0].config
    if config.projections != 1:
        raise InputError("joining heads: the models must each have one projection head")
    fusion_state = models[0].fusion.state_dict()
    for i, m in enumerate(models[1:], start=1):
        if m.config != config:
            raise InputError(f"joining heads: model {i}'s config differs from model 0's; expected one recipe")
        other = m.fusion.state_dict()
        if any(not torch.equal(v, other[k]) for k, v in fusion_state.items()):
            raise InputError(
                f"joining heads: model {i}'s fusion weights differ from model 0's; only models with a "
                "parameter-free (GFF) or shared fusion can be joined"
            )
    probes = probe_width(config.type_weight, config.caption_weight)
    k = len(models)
    joined_config = dataclasses.replace(
        config, embed_dim=k * (config.embed_dim - probes) + probes, projections=k
    )
    first = models[0]
    joined = TextITSR(joined_config, image_encoder=first.image_encoder, text_encoder=first.text_encoder)
    joined.fusion.load_state_dict(fusion_state)
    for side in ("pair_head", "text_head"):
        target = _projection(getattr(joined, side))
        assert isinstance(target, ProjectionEnsemble)
        for slot, m in zip(target.heads, models, strict=True):
            slot.load_state_dict(_projection(getattr(m, side)).state_dict())
    with torch.no_grad():
        joined.logit_scale.copy_(torch.stack([m.logit_scale.detach() for m in models]).mean())
    return joined.to(first.device)
