"""The interval every accuracy loom reports comes with."""

from __future__ import annotations

import math


def wilson_interval(right: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion (Wilson 1927, "Probable inference, the law
    of succession, and statistical inference"): unlike the normal approximation it stays inside
    [0, 1] and is not empty at 0 or n right, which small evaluations hit often."""
    if n <= 0:
        return 0.0, 1.0
    p = right / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_with_interval(right: int, n: int) -> str:
    """'42% [30%, 55%]': a proportion with its 95% interval."""
    low, high = wilson_interval(right, n)
    return f"{right / max(n, 1):.0%} [{low:.0%}, {high:.0%}]"
