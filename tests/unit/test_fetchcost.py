"""fs.fetchcost: the choice between a whole cache block and a fragment for a small read that
seeks, from GET times given here (no clock: the samples are the input)."""
from __future__ import annotations

from ossencfs.fs.fetchcost import PROBE_GAP, FetchCost

BLOCK, FRAGMENT = 256 << 10, 8 << 10


def _link(cost: FetchCost, per_request: float, per_block: float, n: int = 8) -> None:
    for _ in range(n):
        cost.record(FRAGMENT, per_request)
        cost.record(BLOCK, per_request + per_block)


def test_probes_first_a_block_then_a_fragment():
    cost = FetchCost()
    assert cost.whole_block_pays(BLOCK, FRAGMENT)          # nothing known: the block probes
    cost.record(BLOCK, 0.030)
    assert not cost.whole_block_pays(BLOCK, FRAGMENT)      # the fragment probes next
    cost.record(FRAGMENT, 0.004)                           # the early block is measured now
    assert cost.per_byte is not None and cost.per_request == 0.004


def test_a_fast_link_takes_blocks_a_slow_one_fragments():
    fast = FetchCost()
    _link(fast, per_request=0.005, per_block=0.0005)       # loopback: bytes cost ~nothing
    assert fast.whole_block_pays(BLOCK, FRAGMENT)
    slow = FetchCost()
    _link(slow, per_request=0.022, per_block=0.042)        # 20 ms, 50 Mbit/s
    assert not slow.whole_block_pays(BLOCK, FRAGMENT)


def test_noise_only_adds_so_the_least_recent_sample_counts():
    cost = FetchCost()
    _link(cost, per_request=0.005, per_block=0.0005)
    cost.record(BLOCK, 0.200)                              # one block stuck behind a queue
    cost.record(FRAGMENT, 0.050)
    assert cost.whole_block_pays(BLOCK, FRAGMENT)


def test_while_fragments_win_a_block_is_fetched_now_and_then_with_growing_gaps():
    cost = FetchCost()
    _link(cost, per_request=0.022, per_block=0.042)
    picks = [cost.whole_block_pays(BLOCK, FRAGMENT) for _ in range(8 * PROBE_GAP)]
    probes = [i for i, p in enumerate(picks) if p]
    assert probes[0] == PROBE_GAP - 1 and len(probes) >= 2
    gaps = [b - a for a, b in zip(probes, probes[1:])]
    assert gaps == sorted(gaps) and gaps[0] == 2 * PROBE_GAP


def test_a_link_that_got_fast_is_seen_after_a_probe():
    cost = FetchCost()
    _link(cost, per_request=0.005, per_block=0.030, n=1)   # a slow first (cold) block
    assert not cost.whole_block_pays(BLOCK, FRAGMENT)
    for _ in range(PROBE_GAP):
        if cost.whole_block_pays(BLOCK, FRAGMENT):
            break
    cost.record(BLOCK, 0.0055)                              # the probe, warm
    assert cost.whole_block_pays(BLOCK, FRAGMENT)


def test_a_connection_is_slow_when_even_the_best_recent_large_get_was():
    cost = FetchCost()
    assert not cost.slow_connection()                       # nothing known: one GET per window
    for _ in range(4):
        cost.record(1 << 20, 0.170)                         # 1 MiB at 50 Mbit/s + 20 ms
    assert cost.slow_connection()
    cost.record(1 << 20, 0.004)                             # one fast GET: the link is fast,
    assert not cost.slow_connection()                       # the slow ones queued (load)
    cost.record(FRAGMENT, 0.500)                            # small GETs measure requests only
    assert not cost.slow_connection()
    fast = FetchCost()
    for _ in range(4):
        fast.record(1 << 20, 0.030)                         # loopback under load: ~35 MB/s
    assert not fast.slow_connection()
