"""Seeds for batches: image i of a batch with seed s is the image that seed s + i gives alone.

The sampling loop draws all its noise through `rng.standard_normal(shape)` with the batch
as the first axis. `PerImageGenerator` answers each such draw row by row from one
`numpy.random.default_rng(seed + i)` per image, so a batch of N is N independent,
individually reproducible runs that share every network call.
"""

from __future__ import annotations

import numpy as np

from diffusion_studio.core.params import check_seed
from diffusion_studio.errors import UsageError


class PerImageGenerator(np.random.Generator):
    """A numpy Generator whose `standard_normal` fills row i of the batch from seed + i."""

    def __init__(self, seed: int, batch: int) -> None:
        super().__init__(np.random.PCG64(seed))
        self.rows = [np.random.default_rng(seed + i) for i in range(batch)]

    # numpy types standard_normal as overloads (a float without `size`); this one always returns an array.
    def standard_normal(  # type: ignore[override]
        self,
        size: int | tuple[int, ...] | None = None,
        dtype: type[np.float32] | type[np.float64] = np.float64,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        shape = (size,) if isinstance(size, (int, np.integer)) else tuple(size or ())
        if out is not None or not shape or shape[0] != len(self.rows):
            raise UsageError(
                f"PerImageGenerator draws noise of shape [batch={len(self.rows)}, ...] only, got {size!r}."
            )
        return np.stack([rng.standard_normal(shape[1:], dtype=dtype) for rng in self.rows])


def batch_rng(seed: int, batch: int) -> np.random.Generator:
    """`default_rng(seed)` for one image; a `PerImageGenerator` (seed, seed + 1, …) for a batch."""
    seed = check_seed(seed)
    if batch == 1:
        return np.random.default_rng(seed)
    return PerImageGenerator(seed, batch)
