"""Seeded draws of latency and injected faults for the simulated server."""

from __future__ import annotations

import math
import random
from typing import Literal

from fanfold.testing._config import SimServerConfig

Fault = Literal[500, 503, "stall", "drop", "malformed"]


class Dice:
    """Seeded random draws; latency and faults use separate streams so they do not interact.

    Not thread-safe; the caller holds the server lock.
    """

    def __init__(self, seed: int) -> None:
        self._latency = random.Random(f"{seed}:latency")
        self._faults = random.Random(f"{seed}:faults")

    def latency(self, config: SimServerConfig) -> float:
        """Seconds to wait before answering (fixed, or lognormal around the median)."""
        if config.latency_median is None:
            return config.latency
        return config.latency_median * math.exp(config.latency_sigma * self._latency.gauss())

    def fault(self, config: SimServerConfig) -> Fault | None:
        """The fault to inject into one request, or None to answer normally."""
        rates: tuple[tuple[Fault, float], ...] = (
            (500, config.error_500_rate),
            (503, config.error_503_rate),
            ("stall", config.stall_rate),
            ("drop", config.drop_rate),
            ("malformed", config.malformed_rate),
        )
        if not any(rate for _, rate in rates):
            return None
        draw = self._faults.random()
        for fault, rate in rates:
            if draw < rate:
                return fault
            draw -= rate
        return None
