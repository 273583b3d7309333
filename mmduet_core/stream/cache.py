"""The KV cache of one duet stream: pre-allocated, so a token appended is written in place, not re-copied.

transformers' `DynamicCache` grows by concatenation, which copies the whole cache at every decoded token. A
`DuetCache` layer keeps a buffer with spare room (doubled when full) and hands attention a view of its first
`length` positions, so appending, cropping back after a removed reply, and dropping frames for the KV window are
writes into the buffer. `fork` copies a prefix once into a fresh cache (one row per reply of a batch).
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

MIN_ROOM = 256  # positions allocated beyond the first write


class GrowingLayer(DynamicLayer):
    """One layer's keys and values in a buffer of spare capacity; `keys` / `values` are views of its used part."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.length = 0
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        self._k = key_states.new_empty(*key_states.shape[:-2], MIN_ROOM, key_states.shape[-1])
        self._v = value_states.new_empty(*value_states.shape[:-2], MIN_ROOM, value_states.shape[-1])
        self.is_initialized = True
        self._expose()

    def _expose(self) -> None:
        self.keys, self.values = self._k[..., : self.length, :], self._v[..., : self.length, :]

    def _reserve(self, needed: int) -> None:
        if needed <= self._k.shape[-2]:
            return
        capacity = max(needed, 2 * self._k.shape[-2])
        for name in ("_k", "_v"):
            old = getattr(self, name)
            new = old.new_empty(*old.shape[:-2], capacity, old.shape[-1])
            new[..., : self.length, :] = old[..., : self.length, :]
            setattr(self, name, new)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = key_states.shape[-2]
        self._reserve(self.length + n)
        self._k[..., self.length: self.length + n, :] = key_states
        self._v[..., self.length: self.length + n, :] = value_states
        self.length += n
        self._expose()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def crop(self, tokens_to_remove: int) -> None:
        """Drop the last `-tokens_to_remove` positions (transformers' convention: a negative count)."""
        self.truncate(self.length + tokens_to_remove if tokens_to_remove < 0 else tokens_to_remove)

    def truncate(self, length: int) -> None:
        if self.is_initialized:
            self.length = min(self.length, length)
            self._expose()

    def drop(self, start: int, end: int) -> None:
        """Remove positions [start, end), moving the rest down."""
        if not self.is_initialized or end <= start:
            return
        tail = self.length - end
        for buffer in (self._k, self._v):
            buffer[..., start: start + tail, :] = buffer[..., end: self.length, :].clone()
        self.length -= end - start
        self._expose()

    def copy_prefix(self, length: int, rows: int, room: int) -> GrowingLayer:
        """A new layer holding positions [0, length) repeated over `rows`, with `room` spare positions."""
        out = GrowingLayer()
        if self.is_initialized:
            shape = (rows, *self._k.shape[1:-2], length + room, self._k.shape[-1])
            out._k, out._v = self._k.new_empty(shape), self._v.new_empty(shape)
            out._k[..., :length, :] = self._k[..., :length, :]
            out._v[..., :length, :] = self._v[..., :length, :]
            out.device, out.length, out.is_initialized = self.device, length, True
            out._expose()
        return out


class DuetCache(DynamicCache):
    """A `DynamicCache` whose layers are `GrowingLayer`s."""

    def __init__(self, layers: list[GrowingLayer] | None = None, num_layers: int | None = None):
        super().__init__()
        self.layers = layers if layers is not None else [GrowingLayer() for _ in range(num_layers or 0)]
        self.layer_class_to_replicate = GrowingLayer if layers is None and not num_layers else None

    @property
    def length(self) -> int:
        return self.get_seq_length()

    def truncate(self, length: int) -> None:
        """Keep the first `length` positions."""
        for layer in self.layers:
            layer.truncate(length)

    def drop(self, start: int, end: int) -> None:
        """Remove positions [start, end) (the KV window)."""
        for layer in self.layers:
            layer.drop(start, end)

    def fork(self, length: int, rows: int = 1, room: int = MIN_ROOM) -> DuetCache:
        """A new cache with this one's first `length` positions (repeated over `rows`); this one is untouched."""
        return DuetCache([layer.copy_prefix(length, rows, room) for layer in self.layers])


class FrameWindow:
    """The KV window's bookkeeping: where each frame sits in the cache, so that all but the prefix (system turn
    and first message) and the last `size` frames can be dropped. `size=None` keeps everything."""

    def __init__(self, size: int | None):
        self.size = size
        self.prefix_end: int | None = None  # cache position where the first frame starts
        self.frames: list[tuple[int, int]] = []  # [start, end) of each frame in the cache

    def note_frame(self, start: int, end: int) -> None:
        if self.size is not None:
            self.prefix_end = start if self.prefix_end is None else self.prefix_end
            self.frames.append((start, end))

    def forget_after(self, length: int) -> None:
        """The cache was cut back to `length` positions."""
        self.frames = [f for f in self.frames if f[1] <= length]

    def apply(self, cache: DuetCache) -> None:
        """Drop everything between the prefix and the last `size` frames."""
        if self.size is None or len(self.frames) <= self.size:
            return
        cut_start, cut_end = self.prefix_end, self.frames[-self.size][0]
        if cut_end <= cut_start:
            return
        cache.drop(cut_start, cut_end)
        removed = cut_end - cut_start
        self.frames = [(s - removed, e - removed) for s, e in self.frames[-self.size:]]

    def copy(self) -> FrameWindow:
        out = FrameWindow(self.size)
        out.prefix_end, out.frames = self.prefix_end, list(self.frames)
        return out
