"""Hidden rate limits of the simulated server."""

from __future__ import annotations


class TokenBucket:
    """A token bucket of ``capacity`` tokens refilled at ``rate`` tokens per second.

    Starts full. Not thread-safe; the caller holds the server lock.
    """

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self._tokens = capacity
        self._stamp = now

    def take(self, now: float) -> float:
        """Take one token if available.

        Returns:
            0.0 if a token was taken, else the seconds until one will be available.
        """
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate
