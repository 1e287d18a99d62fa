"""PVT spatial-reduction attention for attnbench; importing it registers the mechanism ``sra``.

``sra_attention.py`` is the same file as ``examples/sra_attention.py`` (the plugin-file way in);
``tests/test_entry_points.py`` keeps the two identical.
"""

from attnbench_sra.sra_attention import SpatialReductionAttention

__all__ = ["SpatialReductionAttention"]
