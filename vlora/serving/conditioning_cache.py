"""An LRU cache of image conditioning by (image content hash, model version), with counters.

Chat clients send the whole conversation, image included, on every turn, and VQA clients ask
several questions about one image: the generator (or projector) runs once per image and model
version. Bounded by bytes, since VLoRA's factors at the paper's size are about 21 MB per image
in fp16. Thread-safe: a serving process looks entries up from its event loop and fills them from
worker threads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from vlora.serving.conditioning import Conditioning


@dataclass(frozen=True)
class CacheKey:
    image_sha256: str
    model_version: str


class ConditioningCache:
    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[CacheKey, Conditioning] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = self.too_large = 0

    def get(self, key: CacheKey) -> Conditioning | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry

    def put(self, key: CacheKey, value: Conditioning) -> None:
        size = value.nbytes
        with self._lock:
            if size > self.max_bytes:
                self.too_large += 1  # counted, never cached: it would evict everything else
                return
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._entries[key] = value
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes
                self.evictions += 1

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            lookups = self.hits + self.misses
            return {
                "hits": self.hits,
                "misses": self.misses,
                "hit_rate": round(self.hits / lookups, 4) if lookups else None,
                "entries": len(self._entries),
                "bytes": self._bytes,
                "max_bytes": self.max_bytes,
                "evictions": self.evictions,
                "not_cached_too_large": self.too_large,
            }
