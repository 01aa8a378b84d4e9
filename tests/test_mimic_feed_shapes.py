"""The MLLP benchmark's two shapes of the MIMIC-IV feed carry the same lab rows (bench/mimic_mllp.py
reports both): one lab order per test, or one per specimen with its tests as OBX segments. What
each shape must hold is counted here from labevents.csv.gz with polars and read back from the
messages with plain string splits (HL7 v2: segments end in CR, fields split on |); then the
events carescore's own parser and mapper make of each lab message are checked against the OBR
fields they come from.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import polars as pl
import pytest

from connectors.hl7v2.mapping import MapContext, map_message
from connectors.hl7v2.parser import parse
from engine.places import Places
from tests import mimic_hl7 as mh
from tests.conftest import needs_testdata

pytestmark = pytest.mark.corpus


def segments(text: str, name: str) -> list[list[str]]:
    return [s.split("|") for s in text.split("\r") if s.startswith(name + "|")]


def test_the_two_shapes_carry_the_same_lab_rows() -> None:
    data = mh.load(needs_testdata("mimic-iv-demo"), datetime(2026, 12, 1, tzinfo=UTC).date())
    labs = data.labevents
    stored = labs.filter(pl.col("storetime").is_not_null())
    # an ORM per specimen ordered through CPOE (a priority), an ORU per specimen and store time
    specimens_ordered = labs.filter(pl.col("priority").is_not_null())["specimen_id"].n_unique()
    results = stored.select("specimen_id", "storetime").unique().height
    last_store = dict(stored.group_by("specimen_id").agg(pl.col("storetime").max()).iter_rows())

    per_test = mh.messages(data, "test")
    per_specimen = mh.messages(data, "specimen")
    assert len(per_test) == len(per_specimen)
    for feed in (per_test, per_specimen):
        kinds = Counter(m.kind for m in feed)
        assert kinds["ORM"] == specimens_ordered and kinds["ORU"] == results
        assert sum(len(segments(m.text, "OBX")) for m in feed if m.kind == "ORU") == stored.height
    # the ADT messages are the same in both
    assert [m.text for m in per_test if m.kind not in ("ORM", "ORU")] == [
        m.text for m in per_specimen if m.kind not in ("ORM", "ORU")
    ]

    orders = sum(len(segments(m.text, "OBR")) for m in per_test if m.kind in ("ORM", "ORU"))
    assert orders == labs.filter(pl.col("priority").is_not_null()).height + stored.height
    placed: dict[str, str] = {}
    for m in per_specimen:
        if m.kind not in ("ORM", "ORU"):
            continue
        (obr,) = segments(m.text, "OBR")  # one order per specimen
        (orc,) = segments(m.text, "ORC")
        specimen = int(obr[3].split("^")[0].removeprefix("S"))
        assert obr[4] == mh.SPECIMEN_SERVICE and orc[2] == obr[2]
        if m.kind == "ORM":
            placed[obr[3]] = obr[2]
            continue
        # the same placer number as the specimen's order; "F" only at its last store time
        assert placed.get(obr[3], obr[2]) == obr[2]
        final = datetime.strptime(obr[22], "%Y%m%d%H%M%S%z").replace(tzinfo=None) == last_store[specimen]
        assert obr[25] == ("F" if final else "A"), (obr[22], last_store[specimen])
    assert len(placed) == specimens_ordered


def test_carescore_maps_each_specimen_message_to_two_events() -> None:
    """Through carescore's parser and mapper: an order message to its order (ORC-9) and
    collection (OBR-7), a result message to the collection again and its result (OBR-22, at
    OBR-25's status: A, some results available, is partial and ends no turnaround), as the
    benchmark's '2.0 events a message' says; and each OBR of the per-test shape alike."""
    data = mh.load(needs_testdata("mimic-iv-demo"), datetime(2026, 12, 1, tzinfo=UTC).date())
    places = Places.model_validate(mh.places_config())
    received = datetime.now(UTC)
    for orders in ("specimen", "test"):
        context = MapContext(places).at(received)  # one context: results find their orders
        for m in mh.messages(data, orders):
            if m.kind not in ("ORM", "ORU"):
                continue
            events = map_message(parse(m.text), context)
            groups = len(segments(m.text, "OBR"))
            assert orders == "test" or groups == 1
            types = Counter(e.type for e in events)
            if m.kind == "ORM":
                assert types == {"lab.order": groups, "lab.collect": groups}, m.text
                continue
            assert types == {"lab.collect": groups, "lab.result": groups}, m.text
            statuses = {getattr(e, "result_status", None) for e in events if e.type == "lab.result"}
            status = segments(m.text, "OBR")[0][25]
            assert statuses == {"final" if status == "F" else "partial"}, (status, statuses)
