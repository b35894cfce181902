"""``local``: a plain dict in each process -- the control that is *not* shared.

Every worker gets its own empty dict after fork, so a dialog created by one
worker is invisible to the others. Runs with ``local`` must visibly fail the
cross-worker checks (BYE answered 481, lost dialogs > 0); that is its purpose.
Options: none beyond ``fsync`` / ``eatmydata``, which it accepts and ignores.
"""
from __future__ import annotations

import time
from typing import Optional

from backends.base import Store, UpdateFn


class LocalStore(Store):
    name = "local"
    shared = False

    def __init__(self, *, fsync: bool = False, eatmydata: bool = False) -> None:
        super().__init__(fsync=fsync, eatmydata=eatmydata)
        self._data: dict[bytes, tuple[bytes, float]] = {}

    def connect(self) -> None:
        # A fresh dict per worker: whatever the parent held is not inherited.
        self._data = {}

    def _live(self, key: bytes) -> Optional[bytes]:
        item = self._data.get(key)
        if item is None:
            return None
        value, deadline = item
        if deadline and deadline <= time.monotonic():
            del self._data[key]
            return None
        return value

    @staticmethod
    def _deadline(ttl: Optional[float]) -> float:
        return time.monotonic() + ttl if ttl else 0.0

    def get(self, key: bytes) -> Optional[bytes]:
        return self._live(key)

    def add(self, key: bytes, value: bytes, ttl: Optional[float] = None) -> bool:
        if self._live(key) is not None:
            return False
        self._data[key] = (value, self._deadline(ttl))
        return True

    def put(self, key: bytes, value: bytes, ttl: Optional[float] = None) -> None:
        self._data[key] = (value, self._deadline(ttl))

    def update(self, key: bytes, fn: UpdateFn, ttl: Optional[float] = None) -> Optional[bytes]:
        new = fn(self._live(key))
        if new is None:
            self._data.pop(key, None)
        else:
            self._data[key] = (new, self._deadline(ttl))
        return new

    def delete(self, key: bytes) -> bool:
        existed = self._live(key) is not None
        self._data.pop(key, None)
        return existed

    def count(self) -> int:
        return sum(1 for k in list(self._data) if self._live(k) is not None)

    def close(self) -> None:
        self._data = {}
