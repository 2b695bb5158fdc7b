"""RGB/NIR time pairing: one rule, used offline (bag extraction) and live (teacher_node).

The rule is *mutual nearest neighbours within a slop*: RGB frame ``i`` and NIR frame ``j`` form a
pair when ``j`` is the NIR frame nearest in time to ``i``, ``i`` is the RGB frame nearest to ``j``,
and ``|t_rgb[i] - t_nir[j]| <= max_dt``. Ties go to the earlier frame.

Why this rule:
- each frame is used at most once (a frame has one nearest neighbour), so a NIR frame is never
  copied into two training pairs;
- pairs never cross in time (for 1-D stamps, two mutual-nearest pairs cannot cross), so the pair
  list keeps both streams' order;
- with different camera rates the faster stream simply leaves frames unpaired instead of pairing
  them with a stale frame of the slower one;
- it is decidable online: whether a pair is final depends only on stamps already seen (below), so
  :class:`StreamPairer` gives exactly the offline answer with bounded buffers and bounded delay.

When is a live pair final? The nearest NIR frame ``n`` to an RGB frame ``r`` (distance ``d``) can
no longer change once a NIR stamp ``>= t_r + d`` has arrived: stamps of one topic arrive in order,
so every later NIR frame is at least as far away (ties keep the earlier one). The same holds for
the nearest RGB frame of a NIR frame. A pair is emitted once both directions are final; a frame is
dropped once its own nearest is final and is not mutual (or is farther than ``max_dt``). In
practice a pair is released when the next frame of each stream has arrived, i.e. after one frame
period. ``flush()`` settles everything at the end of a stream (then the result equals
:func:`pair_nearest`'s).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class PairingResult:
    """Result of :func:`pair_nearest`.

    pairs: ``(rgb index, nir index)`` in time order (both indices increase for sorted inputs).
    unpaired_rgb: RGB indices without a pair, in time order.
    closest_dt_ns: smallest ``|t_rgb - t_nir|`` over all RGB frames (``None`` if a stream is
      empty); named in the error when nothing pairs, so the user can pick ``--max-dt``.
    """

    pairs: list[tuple[int, int]]
    unpaired_rgb: list[int]
    closest_dt_ns: int | None


def nearest_index(query: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Index into sorted ``ref`` of the nearest stamp to each of ``query``.

    Ties go to the earlier index, also among equal stamps: the minimum of ``(|dt|, index)``.
    """
    right = np.searchsorted(ref, query, side="left")  # first ref >= query
    left = np.clip(right - 1, 0, len(ref) - 1)
    left = np.searchsorted(ref, ref[left], side="left")  # first of equal stamps
    right = np.clip(right, 0, len(ref) - 1)
    take_right = np.abs(ref[right] - query) < np.abs(query - ref[left])
    return np.where(take_right, right, left)


def pair_nearest(rgb_stamps_ns: Sequence[int], nir_stamps_ns: Sequence[int],
                 max_dt_ns: int) -> PairingResult:
    """Pair RGB and NIR frames by mutual nearest stamps within ``max_dt_ns`` (see module doc).

    Stamps need not be sorted; they are sorted (stably) internally and indices refer to the
    given sequences.
    """
    rgb = np.asarray(rgb_stamps_ns, dtype=np.int64)
    nir = np.asarray(nir_stamps_ns, dtype=np.int64)
    if rgb.size == 0 or nir.size == 0:
        return PairingResult([], list(range(rgb.size)), None)
    rgb_order = np.argsort(rgb, kind="stable")
    nir_order = np.argsort(nir, kind="stable")
    rgb_sorted, nir_sorted = rgb[rgb_order], nir[nir_order]
    nearest_nir = nearest_index(rgb_sorted, nir_sorted)  # [n_rgb] sorted nir position
    nearest_rgb = nearest_index(nir_sorted, rgb_sorted)  # [n_nir] sorted rgb position
    dt = np.abs(rgb_sorted - nir_sorted[nearest_nir])  # [n_rgb]
    mutual = nearest_rgb[nearest_nir] == np.arange(rgb.size)
    paired = mutual & (dt <= max_dt_ns)
    pairs = [(int(rgb_order[i]), int(nir_order[nearest_nir[i]])) for i in np.flatnonzero(paired)]
    unpaired = [int(rgb_order[i]) for i in np.flatnonzero(~paired)]
    return PairingResult(pairs, unpaired, int(dt.min()))


@dataclass
class _Stream:
    """Frames of one topic: the pending ones and a bounded history of settled ones.

    Frames are ``(seq, stamp_ns)`` with ``seq`` counting pushes, so equal stamps stay distinct.
    Settled frames stay visible as *candidates* because a pending frame of the other topic may
    still have one of them as its nearest (then it is unpaired, exactly as offline).
    """

    history_size: int
    pending: deque = field(default_factory=deque)  # (seq, stamp_ns, item), in stamp order
    settled: deque = field(default_factory=deque)  # (seq, stamp_ns), newest last
    latest: int | None = None  # newest stamp seen
    count: int = 0

    def candidates(self) -> list[tuple[int, int]]:
        """``(seq, stamp)`` of every frame that can still be someone's nearest, in order."""
        return list(self.settled) + [(seq, stamp) for seq, stamp, _ in self.pending]

    def pop(self) -> Any:
        seq, stamp, item = self.pending.popleft()
        self.settled.append((seq, stamp))
        if len(self.settled) > self.history_size:
            self.settled.popleft()
        return item


class StreamPairer:
    """Online version of :func:`pair_nearest` for live topics, with bounded buffers.

    ``push_rgb`` / ``push_nir`` return the ``(rgb_item, nir_item)`` pairs that became final with
    that message. The finality argument needs in-order stamps per topic, so:

    - a message at most ``max_dt_ns`` older than the newest one of its topic (a reordering in
      transport) is dropped and counted in ``stats["out_of_order"]``;
    - a jump backwards by more than that (a bag that loops, a driver restart, a clock reset), or
      forwards by more than ``reset_jump_ns`` (a clock jump, one frame stamped far in the future),
      *resets* the pairer: both streams' buffers are cleared and pairing starts again from this
      message, as ``message_filters``' synchronizers do on a time jump. ``stats["resets"]``
      counts them and :attr:`last_reset` says why (for the node's log line).

    When a stream stalls, the other one's buffer is capped at ``buffer_size`` by dropping its
    oldest frame (``stats["overflow"]``); only then can the result differ from
    :func:`pair_nearest`. ``stats["closest_unpaired_dt_ns"]`` is the stamp distance of the last
    frame dropped because its nearest partner was farther than ``max_dt_ns`` (what a user needs
    to pick ``max_dt`` when nothing pairs).
    """

    def __init__(self, max_dt_ns: int, buffer_size: int = 64,
                 reset_jump_ns: int = 2_000_000_000) -> None:
        if max_dt_ns < 0 or buffer_size < 1 or reset_jump_ns <= 0:
            raise ValueError("StreamPairer needs max_dt_ns >= 0, buffer_size >= 1 and reset_jump_ns > 0")
        self.max_dt_ns = int(max_dt_ns)
        self.buffer_size = int(buffer_size)
        self.reset_jump_ns = int(reset_jump_ns)
        self._rgb = _Stream(history_size=buffer_size)
        self._nir = _Stream(history_size=buffer_size)
        self._closed = False
        self.last_reset: str | None = None
        self.stats = {"pairs": 0, "unpaired_rgb": 0, "unpaired_nir": 0, "out_of_order": 0,
                      "overflow": 0, "resets": 0, "closest_unpaired_dt_ns": -1}

    def push_rgb(self, stamp_ns: int, item: Any) -> list[tuple[Any, Any]]:
        """Add an RGB frame; return the pairs that are now final."""
        return self._push(self._rgb, "unpaired_rgb", stamp_ns, item)

    def push_nir(self, stamp_ns: int, item: Any) -> list[tuple[Any, Any]]:
        """Add a NIR frame; return the pairs that are now final."""
        return self._push(self._nir, "unpaired_nir", stamp_ns, item)

    def flush(self) -> list[tuple[Any, Any]]:
        """End of both streams: settle every pending frame and return the remaining pairs.

        The pairer stays usable: later pushes start a new stretch of stream.
        """
        self._closed = True
        pairs = self._settle()
        self._closed = False
        return pairs

    def _push(self, stream: _Stream, drop_key: str, stamp_ns: int,
              item: Any) -> list[tuple[Any, Any]]:
        stamp_ns = int(stamp_ns)
        if stream.latest is not None:
            jump = stamp_ns - stream.latest
            if -self.max_dt_ns <= jump < 0:
                self.stats["out_of_order"] += 1
                return []
            if jump < 0 or jump > self.reset_jump_ns:
                topic = "rgb" if stream is self._rgb else "nir"
                direction = "back" if jump < 0 else "forward"
                self.reset(f"{topic} stamp jumped {direction} by {abs(jump) / 1e9:.3f} s")
                stream = self._rgb if topic == "rgb" else self._nir
        stream.pending.append((stream.count, stamp_ns, item))
        stream.count += 1
        stream.latest = stamp_ns
        pairs = self._settle()
        while len(stream.pending) > self.buffer_size:
            stream.pop()
            self.stats["overflow"] += 1
            self.stats[drop_key] += 1
            pairs += self._settle()
        return pairs

    def reset(self, reason: str) -> None:
        """Forget both streams (pending frames count as unpaired) and start pairing anew."""
        self.stats["unpaired_rgb"] += len(self._rgb.pending)
        self.stats["unpaired_nir"] += len(self._nir.pending)
        self._rgb = _Stream(history_size=self.buffer_size)
        self._nir = _Stream(history_size=self.buffer_size)
        self.stats["resets"] += 1
        self.last_reset = reason

    def _nearest(self, stamp: int, other: _Stream) -> tuple[tuple[int, int] | None, bool]:
        """Nearest ``(seq, stamp)`` of ``other`` to ``stamp`` (ties -> earlier), and if final."""
        best = None
        for candidate in other.candidates():
            if best is None or abs(candidate[1] - stamp) < abs(best[1] - stamp):
                best = candidate
        if best is None:
            return None, self._closed
        final = self._closed or (other.latest is not None and
                                 other.latest >= stamp + abs(best[1] - stamp))
        return best, final

    def _fate(self, stream: _Stream, other: _Stream) -> tuple[str, int | None]:
        """``("pair", partner seq)``, ``("drop", None)`` or ``("wait", None)`` for the head."""
        seq, stamp, _ = stream.pending[0]
        partner, final = self._nearest(stamp, other)
        if not final:
            return "wait", None
        if partner is None or abs(partner[1] - stamp) > self.max_dt_ns:
            if partner is not None:
                self.stats["closest_unpaired_dt_ns"] = abs(partner[1] - stamp)
            return "drop", None
        if partner in other.settled:
            return "drop", None  # the partner was already used or dropped
        # The partner's nearest can only move to a *future* frame of ``stream``, never to this
        # head, so "not mutual now" is final already; "mutual" needs the partner's side final.
        back, back_final = self._nearest(partner[1], stream)
        if back is None or back[0] != seq:
            return "drop", None
        return ("pair", partner[0]) if back_final else ("wait", None)

    def _settle(self) -> list[tuple[Any, Any]]:
        """Pop every head frame whose fate is final; return the pairs formed.

        Pairs are taken when both partners are heads; frames before a partner are settled as
        drops first (their nearest is then final and not mutual, by the no-crossing property).
        """
        pairs: list[tuple[Any, Any]] = []
        progress = True
        while progress:
            progress = False
            for stream, other, drop_key in ((self._rgb, self._nir, "unpaired_rgb"),
                                            (self._nir, self._rgb, "unpaired_nir")):
                if not stream.pending:
                    continue
                fate, partner_seq = self._fate(stream, other)
                if fate == "drop":
                    stream.pop()
                    self.stats[drop_key] += 1
                    progress = True
                elif fate == "pair" and other.pending[0][0] == partner_seq:
                    rgb_item, nir_item = self._rgb.pop(), self._nir.pop()
                    pairs.append((rgb_item, nir_item))
                    self.stats["pairs"] += 1
                    progress = True
        return pairs
