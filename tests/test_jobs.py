"""The typed decoder of job pages and the typed transform: the general path's outcome, faster.

Every record a page brings either takes the typed path, and then comes out exactly as the
general path (``decode_json`` + ``transform_with_raw``) makes it, or is handed to the general
path, whose verdict is the one stored. These tests pin both halves.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from etl.errors import RecordRejected
from etl.extract import ApiKeyAuth, VspcClient
from etl.extract.jobs import decode_jobs_page
from etl.jsontext import decode_json, decode_value
from etl.pipeline import JOBS_PATH
from etl.transform import (
    FIELDS,
    LINUX,
    MAC,
    MAX_DEPTH,
    UID_AT,
    WINDOWS,
    Contract,
    JobRecord,
    NotTyped,
    decoded_record,
    fingerprint_text,
    record_fingerprint,
    transform_page,
    transform_record,
    transform_typed,
    transform_with_raw,
)
from tests.test_transform import job, json_values

UID = "724111ac-15f5-bf02-604d-20862fbafece"
UID2 = "3d29a667-2026-2f74-1143-18e04ba3c8e2"
UID3 = "0b7e1c2d-3f4a-4b5c-8d9e-0f1a2b3c4d5e"


def page(*records: object, wire: str | None = None) -> bytes:
    """A jobs page as the console sends it (``wire``: the data array's text, verbatim)."""
    data = wire if wire is not None else json.dumps(list(records), ensure_ascii=False)
    total = len(records) if wire is None else 1
    meta = json.dumps({"pagingInfo": {"total": total, "count": total, "offset": 0}})
    return f'{{"meta": {meta}, "data": {data}}}'.encode()


def general(record: object) -> object:
    """What the general path makes of a record: (row, raw as a value) or its rejection."""
    try:
        row, raw = transform_with_raw(record)
    except RecordRejected as error:
        return ("rejected", error.field, error.reason)
    return row, json.loads(raw)


def typed(text: bytes, values: tuple[Any, ...] | None) -> object:
    """What the typed path makes of it: (row, raw as a value), or None (the general path's)."""
    if values is None:
        return None
    try:
        row, raw = transform_typed(values, text)
    except NotTyped:
        return None
    return row, json.loads(raw)


# -- the page decoder ------------------------------------------------------------------------


def test_a_page_becomes_its_records_texts_and_their_fields() -> None:
    records = [job(instanceUid=UID), job(name="Büro \\\\nas01\\share", restorePoints=7)]
    body = page(*records)
    decoded = decode_jobs_page(body)
    data = decoded["data"]
    assert all(type(r) is JobRecord and not r.decoded for r in data)
    assert decoded["meta"] == {"pagingInfo": {"total": 2, "count": 2, "offset": 0}}
    assert [json.loads(r.text) for r in data] == records
    assert len(data) == 2
    assert data[0].fields == tuple(records[0].get(field.api) for field in FIELDS)
    assert data[1].fields[UID_AT] == records[1]["instanceUid"]
    print_ = record_fingerprint(data[0])
    assert print_ is not None and print_.uid == UID


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ('[{"instanceUid": "x", "n": NaN}]', "NaN is not JSON: the standard library reads it"),
        ('[{"instanceUid": "\\ud800"}]', "a lone surrogate fails msgspec's whole page"),
        ("[" + '{"a":' * MAX_DEPTH + "1" + "}" * MAX_DEPTH + "]", "nesting deep enough"),
        ('{"not": "a list"}', "no data array: the envelope check reports it"),
    ],
)
def test_a_page_msgspec_refuses_is_decoded_as_every_other_body(data: str, why: str) -> None:
    body = page(wire=data)
    decoded, plain = decode_jobs_page(body), decode_json(body)
    records = decoded.get("data")
    if isinstance(records, list):  # each record of the general path, as decode_json reads it
        assert all(r.decoded and r.fields is None for r in records), why
        decoded["data"] = [r.value for r in records]
    assert decoded == plain, why


def test_a_body_that_is_not_json_fails_as_before() -> None:
    with pytest.raises(json.JSONDecodeError):  # the client reports it (a truncated body?)
        decode_jobs_page(b'{"data": [')


@pytest.mark.parametrize(
    "record",
    [
        job(restorePoints=4.0),  # a float with an integral value: the general path takes it
        job(restorePoints="four"),
        job(isEnabled=1),
        job(scheduleEvents="Daily"),
        ["not", "an", "object"],
        None,
    ],
)
def test_a_record_of_other_json_types_gets_no_fields(record: object) -> None:
    data = decode_jobs_page(page(record))["data"]
    assert [r.fields for r in data] == [None]
    assert json.loads(data[0].text) == record


# -- the typed transform ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "wire_extra"),
    [
        ({"name": "a\x00b"}, None),  # a NUL: jsonb cannot store it
        ({"name": "emoji \U0001f600"}, None),  # written as a surrogate pair escape below
        ({"status": None}, None),
        ({"status": ""}, None),
        ({"instanceUid": None}, None),
        ({"lastRun": "2026-02-30T10:00:00Z"}, None),  # a converter rejects it
        ({"restorePoints": 2**40}, None),  # beyond 32 bits
        ({}, '"bytes": "\\u0000"'),
    ],
)
def test_what_the_typed_path_cannot_vouch_for_goes_to_the_general_path(
    changes: dict[str, Any], wire_extra: str | None
) -> None:
    record = job(**changes)
    text = json.dumps(record, ensure_ascii=True).encode()  # non-ASCII as \u escapes
    if wire_extra is not None:
        text = text[:-1] + b", " + wire_extra.encode() + b"}"
    values = decode_jobs_page(page(wire=f"[{text.decode()}]"))["data"][0].fields
    assert typed(text, values) is None


def test_text_that_is_not_utf8_goes_to_the_general_path() -> None:
    # msgspec checks the UTF-8 of the fields it reads, not of those it skips
    text = json.dumps(job()).encode()[:-1] + b', "x": "\xff"}'
    values = decode_jobs_page(b'{"data": [' + text + b"]}")["data"][0].fields
    assert values is not None
    with pytest.raises(NotTyped):
        transform_typed(values, text)


def test_a_unc_path_is_not_taken_for_an_escape() -> None:
    record = job(destination="\\\\umbrella-fs01\\Veeam$\\ws20")
    body = page(record)
    data = decode_jobs_page(body)["data"]
    assert b"\\\\u" in data[0].text
    assert typed(data[0].text, data[0].fields) == general(record)


@pytest.mark.parametrize(
    "number",
    [
        "0.10000000000000000001",  # a double keeps 0.1
        "1e400",  # a double's infinity: the general path rejects the record
        "-2.5E-400",  # a double's zero
    ],
)
def test_numbers_in_unmapped_fields_are_kept_as_written(number: str) -> None:
    text = json.dumps(job()).encode()[:-1] + f', "vendorRatio": {number}}}'.encode()
    data = decode_jobs_page(b'{"data": [' + text + b"]}")["data"]
    row, raw = transform_typed(data[0].fields, data[0].text)
    assert raw.endswith(f'"vendorRatio": {number}}}')
    assert row == transform_record(job())


@given(
    st.dictionaries(
        st.sampled_from([field.api for field in FIELDS] + ["extra"]), json_values, max_size=12
    )
)
def test_any_record_the_typed_path_takes_comes_out_as_the_general_path_makes_it(
    changes: dict[str, Any],
) -> None:
    record = job(**{"instanceUid": UID, **changes})
    body = json.dumps({"data": [record]}).encode()  # NaN, surrogates, escapes as the wire has them
    try:
        decoded = decode_jobs_page(body)
    except RecursionError:
        return
    (record,) = decoded["data"]
    if record.decoded:  # refused as a page: decoded as any other body
        assert type(record.value) is type(decode_json(body)["data"][0])
        return
    text = record.text
    outcome = typed(text, record.fields)
    if outcome is not None:
        assert outcome == general(decode_value(text)[0])


# -- a page through the pipeline's transform ---------------------------------------------------


def test_a_typed_page_gives_the_rows_and_rejections_of_the_general_path() -> None:
    records = [
        job(instanceUid=UID),
        job(instanceUid=UID2, restorePoints=4.0),  # no fields: the general path accepts it
        job(name="a\x00b"),  # NotTyped: decoded, then rejected by the general path
        job(instanceUid=UID3, name="snow \u2603"),
        ["not a record"],  # no fields: rejected by the general path
    ]
    body = json.dumps({"data": records}, ensure_ascii=False).encode()
    data = decode_jobs_page(body)["data"]
    assert not any(r.decoded for r in data)
    assert [r.fields is None for r in data] == [False, True, False, False, True]
    prints = [
        None if r.fields is None else fingerprint_text(r.fields[UID_AT], r.text) for r in data
    ]
    rows, raws, fps, rejects = transform_page(data, prints, set())

    orjson_data, proven = decode_value(body)
    general_records = [decoded_record(v, proven) for v in orjson_data["data"]]
    g_prints = [record_fingerprint(r) for r in general_records]
    g_rows, g_raws, _, g_rejects = transform_page(general_records, g_prints, set())
    assert len(rows) == 3 and rows == g_rows
    assert rows[1][FIELDS.index(next(f for f in FIELDS if f.api == "restorePoints"))] == 4
    assert [json.loads(r) for r in raws] == [json.loads(r) for r in g_raws]
    assert [(r.instance_uid, r.reason, r.raw) for r in rejects] == [
        (r.instance_uid, r.reason, r.raw) for r in g_rejects
    ]
    assert rejects[0].reason.startswith("field name") and "NUL" in rejects[0].reason
    assert "not a JSON object" in rejects[1].reason
    # a stored fingerprint hashes the text received, whichever path made the row
    assert fps == [prints[0].digest, None, prints[3].digest]  # type: ignore[union-attr]


# -- the client applies the decoder to the jobs path only -------------------------------------


@pytest.mark.parametrize("base", ["https://vspc.example:1280", "https://proxy.example/vspc/"])
def test_the_client_decodes_only_the_configured_path_with_it(base: str) -> None:
    body = page(job())

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"Content-Type": "application/json"})

    http = httpx.Client(base_url=base, transport=httpx.MockTransport(handler))
    client = VspcClient(http, ApiKeyAuth("k"), decoders={JOBS_PATH: decode_jobs_page})
    assert all(type(r) is JobRecord for r in client.get_json(JOBS_PATH)["data"])
    assert client.get_json("/api/v3/organizations")["data"] == [job()]


# -- Linux and Mac: their own contract, both paths --------------------------------------------


def general_of(record: object, contract: Contract) -> object:
    try:
        row, raw = transform_with_raw(record, contract=contract)
    except RecordRejected as error:
        return ("rejected", error.field, error.reason)
    return row, json.loads(raw)


def typed_of(text: bytes, values: tuple[Any, ...] | None, contract: Contract) -> object:
    if values is None:
        return None
    try:
        row, raw = transform_typed(values, text, contract)
    except NotTyped:
        return None
    return row, json.loads(raw)


@pytest.mark.parametrize("contract", [LINUX, MAC], ids=["linux", "mac"])
@given(
    st.dictionaries(
        st.sampled_from([field.api for field in FIELDS] + ["extra"]), json_values, max_size=12
    )
)
def test_linux_and_mac_records_take_either_path_to_the_same_verdict(
    contract: Contract, changes: dict[str, Any]
) -> None:
    record = job(**{"instanceUid": UID, **changes})
    if "scheduleEvents" not in changes:  # a Linux or Mac record has none
        record.pop("scheduleEvents", None)
    body = json.dumps({"data": [record]}).encode()
    try:
        decoded = decode_jobs_page(body)
    except RecursionError:
        return
    (item,) = decoded["data"]
    if item.decoded:
        return
    outcome = typed_of(item.text, item.fields, contract)
    if outcome is not None:
        assert outcome == general_of(decode_value(item.text)[0], contract)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("backuprepository", "BackupRepository"),
        ("CLOUDREPOSITORY", "CloudRepository"),
        ("LocalFolder", "LocalFolder"),
        ("sharedfolder", "SharedFolder"),
        ("ObjectStorage", "ObjectStorage"),  # unknown: kept as received
        ("Local", "Local"),  # a Windows value is not a Linux one: kept as received
    ],
)
def test_the_linux_contract_folds_the_detailed_target_type_and_has_no_schedule_events(
    target: str, expected: str
) -> None:
    at = {f.api: i for i, f in enumerate(FIELDS)}
    record = job(instanceUid=UID, targetType=target, scheduleEvents=["AtLock"])
    (item,) = decode_jobs_page(page(record))["data"]
    for result in (typed_of(item.text, item.fields, LINUX), general_of(record, LINUX)):
        assert result is not None
        row, raw = result  # type: ignore[misc]
        assert row[at["targetType"]] == expected
        assert row[at["scheduleEvents"]] is None
        assert raw["scheduleEvents"] == ["AtLock"]  # kept in raw as received
    windows_row, _ = general_of(record, WINDOWS)  # type: ignore[misc]
    assert windows_row[at["scheduleEvents"]] == ["AtLock"]
