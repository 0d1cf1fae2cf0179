"""Latency windows of rpc servers: counted by minute, merged across servers, read as quantiles."""

from __future__ import annotations

from rpc.latency import BOUNDS_MS, MethodStats, merge, quantile


def test_two_servers_windows_merge_into_the_quantiles_of_all_their_calls():
    fast, slow = MethodStats(), MethodStats()
    for _ in range(99):
        fast.observe("orders.quote", 0.0007, error=False, now=1_000.0)
    slow.observe("orders.quote", 3.0, error=True, now=1_000.0)

    merged = merge(stats.window(now=1_000.0).items() for stats in (fast, slow))

    (only,) = merged.values()
    assert (only["calls"], only["errors"]) == (100, 1)
    # 99 calls in the 0.5-1 ms bucket: the median is inside it, the 100th call is the slowest.
    assert 0.5 <= quantile(only["buckets"], 0.5) <= 1.0
    assert 2_500 <= quantile(only["buckets"], 0.999) <= 5_000


def test_calls_older_than_the_window_are_forgotten():
    stats = MethodStats(window_s=900.0)
    stats.observe("inventory.check", 0.01, error=False, now=0.0)
    stats.observe("inventory.check", 0.01, error=False, now=600.0)

    assert stats.window(now=600.0)["inventory.check"]["calls"] == 2
    assert stats.window(now=960.0)["inventory.check"]["calls"] == 1
    assert stats.window(now=1_600.0) == {}


def test_no_calls_have_no_quantile_and_other_bucket_layouts_are_skipped():
    assert quantile([0] * len(BOUNDS_MS), 0.5) is None
    assert merge([[("m", [1, 0, 1])]]) == {}
