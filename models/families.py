"""The table: every model family and every VAE the pack runs. A new family is a module beside its model code
that fills a Family (models/family.py), plus one entry here.

The order is the order of the nodes' combo lists (OpenSora Text Encode's family, the sampler's scheduler):
saved workflows store the values, but the defaults are the first entries, so new families go at the end.
"""
from __future__ import annotations

from .cogvideox import family as cogvideox
from .family import VAE, Family
from .opensora import v1_0_v1_1, v1_2, v2_0

FAMILIES: dict[str, Family] = {f.name: f for f in (v1_2.FAMILY, cogvideox.FAMILY, v1_0_v1_1.V1_0, v1_0_v1_1.V1_1,
                                                    v2_0.FAMILY)}
# checkpoint kind (checkpoint.detect_family) -> the VAE it is
VAES: dict[str, VAE] = {**v1_2.VAES, **cogvideox.VAES, **v1_0_v1_1.VAES, **v2_0.VAES}

BY_CHECKPOINT: dict[str, Family] = {kind: f for f in FAMILIES.values() for kind in f.checkpoints}
BY_TEXT_FAMILY: dict[str, Family] = {name: f for f in FAMILIES.values() for name in f.text_families}


TEXT_FAMILIES = list(BY_TEXT_FAMILY)
SCHEDULERS = list(dict.fromkeys(s for f in FAMILIES.values() for s in f.schedulers))
