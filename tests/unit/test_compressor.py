"""The event store's compressor: cheaper for small states, and the same format as ever."""

from __future__ import annotations

import json
import os

from eventsourcing.compressor import ZlibCompressor

from adapters.recorders import FastZlibCompressor

SMALL = json.dumps({"order_id": "o-1", "amount": "42.00", "items": [{"sku": "a"}] * 5}).encode()
LARGE = json.dumps({"lots": [{"id": f"lot-{n}", "points": n} for n in range(2000)]}).encode()


def test_states_round_trip_and_read_as_the_librarys_do() -> None:
    ours, library = FastZlibCompressor(), ZlibCompressor()
    for state in (SMALL, LARGE, b"", os.urandom(300)):
        packed = ours.compress(state)
        assert ours.decompress(packed) == state
        # Rows written before (by the library's compressor) and after read either way.
        assert library.decompress(packed) == state
        assert ours.decompress(library.compress(state)) == state


def test_a_small_state_uses_a_small_window_and_shrinks_as_much() -> None:
    packed = FastZlibCompressor().compress(SMALL)
    assert packed != ZlibCompressor().compress(SMALL)  # not the library's default settings
    assert len(packed) <= len(ZlibCompressor().compress(SMALL)) + 8
