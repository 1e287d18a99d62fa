"""The seed models (BiFormer, BiFormer-STL, DeBiFormer), registered in timm, and released-checkpoint loading.

``import attnbench.models`` registers ``biformer_{tiny,small,base,stl}`` and
``debiformer_{tiny,small,base}`` with ``timm.create_model`` (``features_only=True`` makes them
backbones at any input size; :data:`DENSE_PREDICTION` holds the released detection and
segmentation settings of BiFormer, see docs/seed-models.md); ``import attnbench`` alone does not
(it imports no torch), and neither does first use of ``attnbench.count_flops`` and the other
public names, so that a mechanism or ``attnbench list`` does not pay for importing timm. Anything
under ``attnbench.models`` (the models study, the ablation backbone) registers them on import.

:func:`published_numbers` and :func:`measure_model` feed the models table
(``studies/paper_table.yaml``).
"""

from attnbench._compat import patch_torchvision_without_ops

patch_torchvision_without_ops()  # before timm is imported below

from attnbench.models.biformer import DENSE_PREDICTION, BiFormer, BiFormerSTL  # noqa: E402
from attnbench.models.checkpoint import (  # noqa: E402
    CheckpointMismatchError,
    LoadResult,
    load_official_checkpoint,
    official_key_map,
    register_official_names,
    to_official_state_dict,
)
from attnbench.models.debiformer import DeBiFormer  # noqa: E402
from attnbench.models.layers import AttentionLePE  # noqa: E402
from attnbench.models.measure import SEED_MODELS, build_model, measure_model  # noqa: E402
from attnbench.models.published import published_numbers  # noqa: E402

__all__ = [
    "DENSE_PREDICTION",
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
