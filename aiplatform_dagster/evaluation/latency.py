"""Latency percentiles, so every benchmark reports tail latency the same way."""

from collections.abc import Sequence

import numpy as np


def percentiles(
    samples_ms: Sequence[float], ps: Sequence[float] = (50, 95, 99)
) -> dict[str, float]:
    """Map each percentile p to "p{p}_ms" by linear interpolation (numpy's default)."""
    if len(samples_ms) == 0:
        raise ValueError("percentiles needs at least one latency sample; got none")
    values = np.percentile(np.asarray(samples_ms, dtype=float), list(ps), method="linear")
    return {f"p{p:g}_ms": float(value) for p, value in zip(ps, values, strict=True)}
