"""The ranking a capped family keeps between full reads: the entities it shows after a resync
are the top N of the whole table, though it keeps only the contenders."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.collectors.usage.ranking import contenders, ranked, rerank, top


def _truth(old: dict[str, int], added: dict[str, int], cap: int) -> frozenset[str] | None:
    totals = {e: old.get(e, 0) + added.get(e, 0) for e in old.keys() | added.keys()}
    if len(totals) <= cap:
        return None
    return frozenset(e for e, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:cap])


def _full_read(old: dict[str, int], recent: dict[str, int], cap: int):
    entries = top(((e, v, v + recent.get(e, 0)) for e, v in old.items()), contenders(cap) + 1)
    return ranked(entries, len(old), cap)


def test_a_full_read_keeps_the_contenders_and_bounds_the_rest():
    old = {f"k{i:05d}": 10 * (6000 - i) for i in range(6000)}
    ranking, shown = _full_read(old, {}, 3)
    assert shown == {"k00000", "k00001", "k00002"}
    assert len(ranking.old) == contenders(3) < len(old)
    assert not ranking.complete
    assert ranking.floor == old[f"k{contenders(3):05d}"]
    # Fewer entities than the cap: every one shown, every one kept.
    ranking, shown = _full_read({"a": 1, "b": 2}, {}, 3)
    assert shown is None and ranking.complete


def test_an_entity_from_the_tail_that_spends_is_looked_up_and_shown():
    old = {f"k{i:05d}": 10 * (6000 - i) for i in range(6000)}
    ranking, _ = _full_read(old, {}, 3)
    asked: list[list[str]] = []

    def lookup(ids):
        asked.append(ids)
        return {e: old[e] for e in ids}

    result = rerank(ranking, 3, {}, {"k05999": 10**6}, lookup)
    assert result is not None
    _, shown = result
    assert shown == {"k05999", "k00000", "k00001"}
    assert asked == [["k05999"]]
    # Small spend in the tail asks nothing.
    asked.clear()
    assert rerank(ranking, 3, {}, {"k05998": 5}, lookup) is not None
    assert asked == []


def test_a_tie_at_the_boundary_that_the_bound_cannot_settle_asks_for_a_full_read():
    old = {f"k{i:05d}": 1 for i in range(5000)}  # all equal: the bound is the shown total
    ranking, _ = _full_read(old, {}, 3)
    # A shift moves the bound without saying who: anyone not kept might now be ahead.
    assert rerank(ranking, 3, {"k04999": 1}, {}, lambda ids: {}) is None


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 5),
    st.dictionaries(st.integers(0, 2600), st.integers(0, 50), min_size=1, max_size=2600),
    st.dictionaries(st.integers(0, 2700), st.integers(0, 80), max_size=60),
    st.dictionaries(st.integers(0, 2700), st.integers(0, 80), max_size=60),
)
def test_shown_after_resyncs_are_the_true_top_n(cap, initial, first, second):
    """However the old totals, the days moving into the old part and the recent spend fall, the
    shown entities after each resync are the top N of all, or a full read is asked for."""
    old = {f"e{k:04d}": v for k, v in initial.items()}
    recent = {f"e{k:04d}": v for k, v in first.items()}
    ranking, shown = _full_read(old, {}, cap)
    assert shown == _truth(old, {}, cap)
    truth_old = dict(old)
    # First resync: some of the recent spend lands, nothing moves into the old part.
    result = rerank(ranking, cap, {}, recent, lambda ids: {e: truth_old.get(e, 0) for e in ids})
    if result is None:
        assert not ranking.complete  # only a ranking that does not hold every entity may not know
        return
    ranking, shown = result
    assert shown == _truth(truth_old, recent, cap)
    # Second: the first's spend moves into the old part, new spend arrives.
    for e, v in recent.items():
        truth_old[e] = truth_old.get(e, 0) + v
    later = {f"e{k:04d}": v for k, v in second.items()}
    result = rerank(ranking, cap, recent, later, lambda ids: {e: truth_old.get(e, 0) for e in ids})
    if result is None:
        assert not ranking.complete
        return
    _, shown = result
    assert shown == _truth(truth_old, later, cap)
