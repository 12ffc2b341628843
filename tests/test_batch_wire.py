"""What crosses from the decoder to the service window: ``udfs.batch.to_wire`` / ``from_wire``.

The job sends each ServiceBatch as plain tuples (pickled by PyFlink) and the service window reads it
back; the window must get exactly the batch the engine gets, field for field and type for type.
"""

from __future__ import annotations

import pickle

from udfs.anomaly import BucketAgg, Notable, ServiceBatch
from udfs.batch import from_wire, summarize, to_wire
from udfs.scenarios.library import build, requests_of
from udfs.signals import SignalMatcher


def _batches(name: str) -> list[ServiceBatch]:
    matcher = SignalMatcher()
    records = list(build(name, scale=0.25).records)
    return [b for msg in requests_of(records, 200) for b in summarize(msg, matcher).batches]


def test_every_batch_of_a_scenario_comes_back_equal_through_pickle_with_its_named_types() -> None:
    batches = _batches("cascade") + _batches("oom_burst")
    assert any(b.notables for b in batches) and any(n.immediate for b in batches for n in b.notables)
    back = [from_wire(pickle.loads(pickle.dumps(to_wire(b)))) for b in batches]
    assert back == batches
    assert all(type(b) is ServiceBatch for b in back)
    assert all(type(a) is BucketAgg for b in back for a in b.buckets)
    assert all(type(n) is Notable for b in back for n in b.notables)
    assert [b.notables[0].immediate for b in back if b.notables] == [b.notables[0].immediate for b in batches
                                                                     if b.notables]


def test_the_wire_form_is_plain_tuples_naming_no_class() -> None:
    batch = next(b for b in _batches("oom_burst") if b.notables and b.buckets)
    wire = to_wire(batch)
    assert type(wire) is tuple and type(wire[3][0]) is tuple and type(wire[4][0]) is tuple
    assert b"udfs" not in pickle.dumps(wire)  # pickle would call back into Python for a named tuple
