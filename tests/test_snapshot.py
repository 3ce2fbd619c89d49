"""snapshot_spans: a memory snapshot's allocations as spans (no GPU needed: a built trace)."""

from __future__ import annotations

import pytest

from vramlib.measure.allocator import snapshot_spans


def _ev(action, addr, size=512):
    return {"action": action, "addr": addr, "size": size, "frames": []}


def test_spans_pair_allocs_with_frees_and_keep_the_live_ones():
    trace = [_ev("alloc", 1), _ev("alloc", 2), _ev("segment_alloc", 9),
             _ev("free_requested", 1), _ev("free_completed", 1), _ev("alloc", 1, 1024)]
    r = snapshot_spans({"device_traces": [trace], "segments": []})
    assert r["events"] == 4
    sizes = sorted((a["size"], t0, t1) for a, t0, t1 in r["spans"])
    assert sizes == [(512, 0, 2), (512, 1, 4), (1024, 3, 4)]
    assert sorted(a["addr"] for a in r["live"]) == [1, 2]


@pytest.mark.parametrize("bad", [None, {}, {"device_traces": []}])
def test_spans_reject_what_is_not_a_snapshot(bad):
    with pytest.raises(ValueError, match="device_traces"):
        snapshot_spans(bad)
