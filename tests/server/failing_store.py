"""An out-of-tree test backend (loaded by dotted path) whose operations fail.

It stands in for a broken or unreachable shared store, not for the server under
test: every single-key operation raises StoreUnavailable (``mode=unavailable``)
or a plain RuntimeError (``mode=crash``), so the test can check the 503 path.
"""
from __future__ import annotations

from typing import Optional

from backends.base import Store, StoreUnavailable, UpdateFn


class FailingStore(Store):
    name = "failing"

    def __init__(self, *, mode: str = "unavailable", fsync: bool = False, eatmydata: bool = False) -> None:
        super().__init__(fsync=fsync, eatmydata=eatmydata)
        self.mode = mode

    def fail(self) -> None:
        if self.mode == "crash":
            raise RuntimeError("backend bug")
        raise StoreUnavailable("store unreachable (test double)")

    def get(self, key: bytes) -> Optional[bytes]:
        self.fail()

    def add(self, key: bytes, value: bytes, ttl: Optional[float] = None) -> bool:
        self.fail()

    def put(self, key: bytes, value: bytes, ttl: Optional[float] = None) -> None:
        self.fail()

    def update(self, key: bytes, fn: UpdateFn, ttl: Optional[float] = None) -> Optional[bytes]:
        self.fail()

    def delete(self, key: bytes) -> bool:
        self.fail()

    def count(self) -> int:
        return 0
