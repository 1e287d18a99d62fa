"""The seed models (BiFormer, BiFormer-STL, DeBiFormer), registered in timm, and released-checkpoint loading.

Importing :mod:`attnbench` registers ``biformer_{tiny,small,base,stl}`` and
``debiformer_{tiny,small,base}`` with ``timm.create_model``. :func:`published_numbers` and
:func:`measure_model` feed the models table (``studies/paper_table.yaml``).
"""

from attnbench.models.biformer import BiFormer, BiFormerSTL
from attnbench.models.checkpoint import (
    CheckpointMismatchError,
    LoadResult,
    load_official_checkpoint,
    official_key_map,
    register_official_names,
    to_official_state_dict,
)
from attnbench.models.debiformer import DeBiFormer
from attnbench.models.layers import AttentionLePE
from attnbench.models.measure import SEED_MODELS, build_model, measure_model
from attnbench.models.published import published_numbers

__all__ = [
    "SEED_MODELS",
    "AttentionLePE",
    "BiFormer",
    "BiFormerSTL",
    "CheckpointMismatchError",
    "DeBiFormer",
    "LoadResult",
    "build_model",
    "load_official_checkpoint",
    "measure_model",
    "official_key_map",
    "published_numbers",
    "register_official_names",
    "to_official_state_dict",
]
