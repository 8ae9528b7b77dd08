"""Worker batches through a reused shared-memory ring instead of fresh shared memory per batch.

With worker processes, torch's ``default_collate`` stacks each batch into a NEW shared-memory
block (``/dev/shm``) that the kernel allocates, zeroes and maps page by page, in the worker and
again in the main process, for every batch. For audio chunks that was most of the loader's time
(2-core VM: ~100 ms for one 68 MB batch of 8 x 6 s chunks with 3 targets, against 4 ms to copy
the same bytes into memory already mapped; docs/results.md, "Speed").

Here each worker allocates one shared block of ``SLOTS`` batch slots, once. :func:`fill` (called
by the datasets' ``__getitems__``) writes a batch's examples straight into a free slot; what
travels through the DataLoader's queue is a small :class:`RingBatch` (the block goes as a file
descriptor, which the main process maps once and keeps while it holds any of its batches). The
main process unpickles it as the same list of tensors ``default_collate`` gives (same shapes,
dtypes and bytes), read in place from the slot. Each of those tensors holds a :class:`_Lease`
on its slot through its storage (so does every view, slice or ``.numpy()`` of it): only when the
last of them is gone is the slot marked free, and only a free slot is written again. So a batch
the caller keeps never changes. ``SLOTS`` covers the batches a worker has in flight
(``prefetch_factor``) plus those the caller holds; a worker that finds its next slot still held
after ``WAIT_S`` (a caller keeping many batches) falls back to ``default_collate``.

Anything other than a batch of equal-shaped CPU tensor tuples, or a call outside a worker, is
``default_collate``'s (:func:`collate` is the ``collate_fn`` of ``loader_options``).
"""
from __future__ import annotations

import logging
import threading
import time

import numpy as np
import torch
from torch.utils.data import default_collate, get_worker_info

#: batches a worker may have queued (the DataLoader's prefetch_factor, see loader_options)
PREFETCH = 4
SLOTS = PREFETCH + 2     # in flight + the batch the caller holds + one the pin-memory thread holds
HEADER = 64            # bytes before slot 0: one state byte per slot (0 free, 1 written)
ALIGN = 64
WAIT_S = 2.0           # longest wait for a free slot before falling back to default_collate

_NUMPY = {torch.float32, torch.float64, torch.float16, torch.bool, torch.uint8, torch.int8,
          torch.int16, torch.int32, torch.int64}  # dtypes numpy can view in place
_ring = None           # the worker's ring (one per worker process; False: none could be allocated)
log = logging.getLogger(__name__)
_fence_lock = threading.Lock()


def _fence() -> None:
    """A full memory barrier (two lock round trips: release then acquire orders every earlier
    load and store before every later one, also on weakly ordered CPUs)."""
    for _ in range(2):
        _fence_lock.acquire()
        _fence_lock.release()


class _Ring:
    def __init__(self, slot_bytes: int):
        self.slot_bytes = slot_bytes
        self.storage = torch.UntypedStorage._new_shared(HEADER + SLOTS * slot_bytes)
        self.bytes = _as_bytes(self.storage)
        self.bytes[:HEADER] = 0
        self.next = 0

    def acquire(self) -> int | None:
        """A free slot (the next in turn first), marked written; None when all stay busy for WAIT_S."""
        deadline = time.monotonic() + WAIT_S
        while True:
            free = [s for s in (*range(self.next, SLOTS), *range(self.next)) if self.bytes[s] == 0]
            if free:
                break
            if time.monotonic() > deadline:
                return None
            time.sleep(0.0005)
        slot = free[0]
        _fence()
        self.bytes[slot] = 1
        self.next = (slot + 1) % SLOTS
        return slot


def _layout(samples) -> list[tuple[torch.dtype, tuple[int, ...], int]] | None:
    """(dtype, batched shape, byte offset) per field, or None when not a batch of equal tensors."""
    first = samples[0]
    if not isinstance(first, (tuple, list)) or not first:
        return None
    out, offset = [], 0
    for k, field in enumerate(first):
        if not isinstance(field, torch.Tensor) or field.device.type != "cpu" or field.dtype not in _NUMPY:
            return None
        for s in samples:
            if (len(s) != len(first) or not isinstance(s[k], torch.Tensor)
                    or s[k].shape != field.shape or s[k].dtype != field.dtype):
                return None
        out.append((field.dtype, (len(samples), *field.shape), offset))
        offset += -(-len(samples) * field.numel() * field.element_size() // ALIGN) * ALIGN
    return out


def _nbytes(layout) -> int:
    dtype, shape, offset = layout[-1]
    return offset + int(np.prod(shape)) * torch.empty(0, dtype=dtype).element_size()


def _view(buf: np.ndarray, base: int, dtype: torch.dtype, shape, offset: int) -> torch.Tensor:
    n = int(np.prod(shape)) * torch.empty(0, dtype=dtype).element_size()
    raw = torch.from_numpy(buf[base + offset: base + offset + n])
    return raw.view(dtype).view(shape)


class RingBatch:
    """A batch written into a worker's ring; unpickled in the main process as a list of tensors."""

    def __init__(self, ring: _Ring, slot: int, layout):
        self.ring, self.slot, self.layout = ring, slot, layout

    def __reduce__(self):
        return _rebuild, (self.ring.storage, self.ring.slot_bytes, self.slot, self.layout)


class _Lease:
    """The main process' hold on one ring slot: freed (the slot marked free for the worker)
    when the last tensor, view or array of the batch goes. Every tensor of the batch is a
    ``torch.from_numpy`` of an array whose base is a :class:`_Field` holding this lease, and
    every view of a tensor shares its storage, which holds that array: so the worker cannot
    overwrite a slot while anything in the main process can still read it."""

    def __init__(self, storage, states: np.ndarray, slot: int):
        self.storage, self.states, self.slot = storage, states, slot

    def __del__(self, _fence=_fence):
        _fence()          # every read of the slot happens before the worker may reuse it
        self.states[self.slot] = 0


class _Field:
    """One field of a leased slot, as numpy sees it (``__array_interface__``; the lease rides along)."""

    def __init__(self, lease: _Lease, ptr: int, shape, typestr: str):
        self.lease = lease
        self.__array_interface__ = {"shape": tuple(shape), "typestr": typestr,
                                    "data": (ptr, False), "version": 3}


def _as_bytes(storage) -> np.ndarray:
    return torch.empty(0, dtype=torch.uint8).set_(storage).numpy()


def _rebuild(storage, slot_bytes: int, slot: int, layout) -> list[torch.Tensor]:
    """In the main process: the batch's tensors, read in place from the slot (no copy)."""
    buf = _as_bytes(storage)
    lease = _Lease(storage, buf[:HEADER], slot)
    base = buf.ctypes.data + HEADER + slot * slot_bytes
    out = []
    for dtype, shape, offset in layout:
        typestr = torch.empty(0, dtype=dtype).numpy().dtype.str
        out.append(torch.from_numpy(np.asarray(_Field(lease, base + offset, shape, typestr))))
    return out


def fill(make, indices):
    """A batch of ``make(i)`` for ``i`` in ``indices`` (``make(i, out)`` writes example ``i``
    into ``out``, one row of each field): in a worker, written straight into a slot of its ring
    (no per-example arrays, no stacking); elsewhere, or when the ring does not apply, the list
    of examples for ``default_collate``."""
    global _ring
    first = make(indices[0])
    if get_worker_info() is None:
        return [first] + [make(i) for i in indices[1:]]
    layout = _layout([first] * len(indices))
    slot = None
    if layout is not None and _ring is not False:
        nbytes = _nbytes(layout)
        if _ring is None or _ring.slot_bytes < nbytes:
            try:
                _ring = _Ring(-(-nbytes // ALIGN) * ALIGN)
            except RuntimeError as exc:  # no room in /dev/shm for the ring: torch's own way
                log.warning("no shared-memory ring for this worker (%s); batches go through "
                            "default_collate", " ".join(str(exc).split())[:200])
                _ring = False
        if _ring:
            slot = _ring.acquire()
    if slot is None:
        return [first] + [make(i) for i in indices[1:]]
    try:
        base = HEADER + slot * _ring.slot_bytes
        views = [_view(_ring.bytes, base, dtype, shape, offset).numpy()
                 for dtype, shape, offset in layout]
        for v, field in zip(views, first):
            v[0] = field.numpy()
        for row, i in enumerate(indices[1:], 1):
            make(i, tuple(v[row] for v in views))
    except BaseException:
        _ring.bytes[slot] = 0      # nothing was sent: the slot is free again
        raise
    return RingBatch(_ring, slot, layout)


def collate(samples):
    """The ``collate_fn`` of ``loader_options``: a batch :func:`fill` wrote into the ring as it
    is, anything else through ``default_collate``."""
    if isinstance(samples, RingBatch):
        return samples
    return default_collate(samples)
