"""RGB/NIR pairing: the mutual-nearest rule offline, and the streaming pairer agreeing with it."""
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmkd_ros.data.pairing import StreamPairer, pair_nearest

MS = 1_000_000


def brute_force_pairs(rgb, nir, max_dt):
    """The rule written out naively: mutual nearest (ties -> lower index) within max_dt."""
    def nearest(stamp, others):
        return min(range(len(others)), key=lambda k: (abs(others[k] - stamp), others[k], k))

    pairs = []
    if not nir:
        return pairs
    for i, stamp in enumerate(rgb):
        j = nearest(stamp, nir)
        if nearest(nir[j], rgb) == i and abs(stamp - nir[j]) <= max_dt:
            pairs.append((i, j))
    return sorted(pairs, key=lambda p: (rgb[p[0]], p[0]))


def stream(rgb, nir, max_dt, seed, buffer_size=1000):
    """Feed both streams to a StreamPairer in a random interleaving (each in order), then flush."""
    rng = random.Random(seed)
    pairer = StreamPairer(max_dt, buffer_size=buffer_size)
    out, i, j = [], 0, 0
    while i < len(rgb) or j < len(nir):
        if j >= len(nir) or (i < len(rgb) and rng.random() < 0.5):
            out += pairer.push_rgb(rgb[i], i)
            i += 1
        else:
            out += pairer.push_nir(nir[j], j)
            j += 1
    return out + pairer.flush(), pairer


def test_same_rate_with_jitter_and_a_dropped_frame():
    rgb = [0, 66 * MS, 133 * MS, 200 * MS, 266 * MS]
    nir = [5 * MS, 60 * MS, 215 * MS, 280 * MS]  # the NIR frame near 133 ms was dropped
    result = pair_nearest(rgb, nir, 30 * MS)
    assert result.pairs == [(0, 0), (1, 1), (3, 2), (4, 3)]
    assert result.unpaired_rgb == [2]
    assert result.closest_dt_ns == 5 * MS


def test_faster_rgb_leaves_frames_unpaired_instead_of_reusing_nir():
    rgb = list(range(0, 1_000 * MS, 66 * MS))  # 15 Hz
    nir = list(range(3 * MS, 1_000 * MS, 100 * MS))  # 10 Hz
    result = pair_nearest(rgb, nir, 40 * MS)
    used_nir = [j for _, j in result.pairs]
    assert len(used_nir) == len(set(used_nir)) == len(nir)
    assert len(result.unpaired_rgb) == len(rgb) - len(nir)


def test_nothing_within_max_dt_reports_the_closest_dt():
    result = pair_nearest([0, 100 * MS], [50 * MS, 170 * MS], 10 * MS)
    assert result.pairs == [] and result.unpaired_rgb == [0, 1]
    assert result.closest_dt_ns == 50 * MS


def test_empty_streams():
    assert pair_nearest([], [1, 2], 5).pairs == []
    empty = pair_nearest([1, 2], [], 5)
    assert empty.unpaired_rgb == [0, 1] and empty.closest_dt_ns is None


def test_unsorted_input_indices_refer_to_the_given_order():
    rgb = [200, 0, 100]
    nir = [101, 1, 199]
    result = pair_nearest(rgb, nir, 5)
    assert result.pairs == [(1, 1), (2, 0), (0, 2)]  # time order, original indices


stamps = st.lists(st.integers(0, 2_000), max_size=25).map(sorted)


@settings(max_examples=300, deadline=None)
@given(rgb=stamps, nir=stamps, max_dt=st.integers(0, 300))
def test_pairing_properties(rgb, nir, max_dt):
    result = pair_nearest(rgb, nir, max_dt)
    rgb_idx = [i for i, _ in result.pairs]
    nir_idx = [j for _, j in result.pairs]
    assert len(set(nir_idx)) == len(nir_idx)  # each NIR frame used at most once
    assert len(set(rgb_idx)) == len(rgb_idx)
    assert all(abs(rgb[i] - nir[j]) <= max_dt for i, j in result.pairs)
    assert rgb_idx == sorted(rgb_idx) and nir_idx == sorted(nir_idx)  # order kept, no crossing
    assert sorted(rgb_idx + result.unpaired_rgb) == list(range(len(rgb)))
    assert result.pairs == brute_force_pairs(rgb, nir, max_dt)
    if rgb and nir:
        assert result.closest_dt_ns == min(abs(r - n) for r in rgb for n in nir)


@settings(max_examples=300, deadline=None)
@given(rgb=stamps, nir=stamps, max_dt=st.integers(0, 300), seed=st.integers(0, 10**6))
def test_stream_pairer_agrees_with_pair_nearest(rgb, nir, max_dt, seed):
    pairs, pairer = stream(rgb, nir, max_dt, seed)
    assert pairs == pair_nearest(rgb, nir, max_dt).pairs
    assert pairer.stats["pairs"] == len(pairs)
    assert pairer.stats["unpaired_rgb"] == len(rgb) - len(pairs)
    assert pairer.stats["unpaired_nir"] == len(nir) - len(pairs)


def test_stream_pairer_releases_pairs_within_a_frame_and_keeps_buffers_small():
    rng = np.random.default_rng(0)
    rgb = [int(k * 66.7 * MS) for k in range(300)]
    nir = [int(k * 66.7 * MS + rng.uniform(-20, 20) * MS) for k in range(300)
           if rng.random() > 0.05]
    pairer = StreamPairer(30 * MS, buffer_size=8)
    early = []
    for k in range(300):  # live order: the frames of one instant arrive together
        early += pairer.push_rgb(rgb[k], k)
        early += [p for j, t in enumerate(nir) if rgb[k] - 33 * MS < t <= rgb[k] + 33 * MS
                  for p in pairer.push_nir(t, j)]
        assert len(pairer._rgb.pending) <= 3 and len(pairer._nir.pending) <= 3
    late = pairer.flush()
    assert len(late) <= 1
    assert early + late == pair_nearest(rgb, nir, 30 * MS).pairs
    assert pairer.stats["overflow"] == 0


def test_stream_pairer_drops_out_of_order_and_caps_a_stalled_stream():
    pairer = StreamPairer(10, buffer_size=4)
    assert pairer.push_rgb(100, "a") == []
    assert pairer.push_rgb(90, "late") == []
    assert pairer.stats["out_of_order"] == 1
    for t in range(200, 1000, 100):  # NIR camera stalled: RGB keeps coming
        pairer.push_rgb(t, t)
    assert len(pairer._rgb.pending) == 4 and pairer.stats["overflow"] >= 1
    assert pairer.push_nir(905, "n") == []  # final only once an RGB stamp >= 910 (or flush)
    assert pairer.flush() == [(900, "n")]


def test_stream_pairer_rejects_bad_arguments():
    with pytest.raises(ValueError):
        StreamPairer(-1)
    with pytest.raises(ValueError):
        StreamPairer(10, buffer_size=0)


def _live(pairer, events):
    """Push ``(kind, stamp)`` events; return the RGB stamps of the pairs formed."""
    out = []
    for kind, stamp in events:
        push = pairer.push_rgb if kind == "rgb" else pairer.push_nir
        out += [rgb for rgb, _ in push(stamp, stamp)]
    return out


def _steady(start_ms, count, period_ms=50, nir_offset_ms=3):
    events = []
    for k in range(count):
        t = (start_ms + k * period_ms) * MS
        events += [("rgb", t), ("nir", t + nir_offset_ms * MS)]
    return events


def test_stream_pairer_resets_on_a_backward_jump_and_pairs_again():
    pairer = StreamPairer(20 * MS, buffer_size=8)
    first = _live(pairer, _steady(10_000, 10))
    assert len(first) == 9  # the last pair waits for a later frame
    # The bag loops: stamps start again 0.5 s after 10 s, far behind the newest seen.
    again = _live(pairer, _steady(10_000, 10))
    assert pairer.stats["resets"] == 1 and "rgb stamp jumped back" in pairer.last_reset
    assert again == [(10_000 + 50 * k) * MS for k in range(9)]
    assert pairer.stats["out_of_order"] == 0


def test_stream_pairer_recovers_from_one_frame_stamped_far_in_the_future():
    pairer = StreamPairer(20 * MS, buffer_size=8)
    _live(pairer, _steady(10_000, 5))
    _live(pairer, [("nir", (10_250 + 1_000_000) * MS)])  # one NIR frame 1000 s ahead
    assert pairer.stats["resets"] == 1 and "nir stamp jumped forward" in pairer.last_reset
    later = _live(pairer, _steady(10_300, 30))
    # Its successor jumps back (a second reset); from then on every pair but the last is formed.
    assert pairer.stats["resets"] == 2
    assert len(later) >= 28


def test_stream_pairer_keeps_small_reorderings_as_out_of_order_and_records_the_closest_miss():
    pairer = StreamPairer(10 * MS, buffer_size=8)
    _live(pairer, [("rgb", 100 * MS), ("rgb", 95 * MS)])
    assert pairer.stats["out_of_order"] == 1 and pairer.stats["resets"] == 0
    # NIR half a period off: nothing pairs, the miss distance is kept for the node's message.
    events = [e for t in range(200, 800, 50) for e in (("rgb", t * MS), ("nir", (t + 25) * MS))]
    assert _live(pairer, events) == []
    assert pairer.stats["closest_unpaired_dt_ns"] == 25 * MS
