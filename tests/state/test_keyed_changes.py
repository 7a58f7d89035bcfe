"""`Changes`, the record of what changed since the last save: a random model run against the states themselves."""

from __future__ import annotations

import random

import pytest

from recoverable._keyed_parts import Changes


def apply(state: dict[str, int], changes: Changes[dict]) -> dict[str, int]:  # type: ignore[type-arg]
    after = {k: v for k, v in state.items() if k not in changes.deleted}
    after.update(changes.set)
    return after


def step(rng: random.Random, state: dict[str, int], changes: Changes[dict]) -> None:  # type: ignore[type-arg]
    key = f"k{rng.randint(0, 8)}"
    if rng.random() < 0.55:
        new = key not in state
        state[key] = rng.randint(0, 99)
        changes.put(key, state[key], new=new)
    elif key in state:
        del state[key]
        changes.delete(key)


@pytest.mark.parametrize("seed", range(200))
def test_the_changes_bring_the_last_save_to_the_state_and_leave_no_trace_of_keys_added_and_deleted(seed: int) -> None:
    rng = random.Random(seed)
    saved = {f"k{i}": i for i in range(4)}
    state = dict(saved)
    changes: Changes[dict] = Changes(dict)  # type: ignore[type-arg]
    for _ in range(rng.randint(0, 30)):
        step(rng, state, changes)
    assert apply(saved, changes) == state
    assert not changes.deleted - saved.keys(), "a key the last save did not hold is never deleted"
    assert not changes.fresh & saved.keys()

    # A save takes these changes and fails; more changes follow; the two are merged again.
    failed, changes = changes, Changes(dict)
    before_failed = dict(state)
    for _ in range(rng.randint(0, 30)):
        step(rng, state, changes)
    assert apply(before_failed, changes) == state
    changes.keep_older(failed)
    assert apply(saved, changes) == state
    assert not changes.deleted - saved.keys()
    assert not changes.fresh & saved.keys()
    assert not set(changes.set) & changes.deleted


def test_a_key_added_and_deleted_before_a_save_is_no_change() -> None:
    changes: Changes[set] = Changes(set)  # type: ignore[type-arg]
    changes.put("a", new=True)
    changes.delete("a")
    assert not changes


def test_the_collector_is_paused_inside_and_back_after_unless_it_was_off() -> None:
    import gc  # noqa: PLC0415

    from recoverable._collector import collector_paused  # noqa: PLC0415

    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValueError, match="boom"), collector_paused():
        raise ValueError("boom")
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # the program turned it off: it stays off
    finally:
        gc.enable()
