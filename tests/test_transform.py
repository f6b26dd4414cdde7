"""The pure transform: tables of real-looking records in, typed rows or named rejections out."""

from __future__ import annotations

import copy
import json
import math
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etl.errors import RecordRejected
from etl.jsontext import decode_value
from etl.load.stage import _UuidTextBinaryDumper
from etl.transform import (
    BUSINESS_COLUMNS,
    FIELDS,
    MAX_DEPTH,
    fingerprint,
    jsonb_safe,
    normalize_enum,
    parse_timestamp,
    record_key,
    transform_record,
    transform_with_raw,
)

# The two example jobs of the vendor page (seeds/000_e54a73112d889be5.txt), with the backslashes
# escaped as a real server sends them ("C:\\VeeamBackup" on the wire is C:\VeeamBackup).
SEED_PAGE = r"""
{ "meta": { "pagingInfo": { "total": 2, "count": 2, "offset": 0 } }, "data": [
 { "instanceUid": "724111ac-15f5-bf02-604d-20862fbafece", "backupAgentUid": "07673b42-89fb-7227-9c6a-95e6908f25de", "organizationUid": "20c8486b-8c20-4b24-86a5-7cf31751c504", "name": "Workstation: File level backup. Personal files. Local drive. Daily schedule._restv3em", "configUid": "4610eb17-b41c-4cc5-81d1-938e57d89b7a", "backupPolicyUid": "7d953629-677a-408f-88ed-9b61031b8151", "backupPolicyFailureMessage": null, "status": "success", "operationMode": "workstation", "destination": "C:\\VeeamBackup", "restorePoints": 4, "lastRun": "2020-03-01T11:35:00+03:00", "lastEndTime": "2020-03-01T11:45:13+03:00", "lastDuration": 613, "nextRun": "2020-03-02T11:30:00+03:00", "avgDuration": 575, "backupMode": "file", "targetType": "local", "isEnabled": true, "scheduleType": "daily", "scheduleEvents": [], "lastModifiedDate": "2020-02-28T04:17:34.507218+03:00", "lastModifiedBy": "vspc\\administrator", "failureMessage": null, "backedUpSize": 12550788 },
 { "instanceUid": "3d29a667-2026-2f74-1143-18e04ba3c8e2", "backupAgentUid": "19873b42-32ea-bbc5-e764-74d8f6ebd698", "organizationUid": "20c8486b-8c20-4b24-86a5-7cf31751c504", "name": "Workstation: File level backup. Personal files. Local drive. Daily schedule._restv3vawServ1", "configUid": "7416ea5c-1773-4e3e-86d8-71de3b54418f", "backupPolicyUid": "d598ae5a-eb96-42f0-9168-66d5d0ab2de0", "backupPolicyFailureMessage": null, "status": "success", "operationMode": "workstation", "destination": "C:\\VeeamBackup", "restorePoints": 4, "lastRun": "2020-03-01T10:00:00+02:00", "lastEndTime": "2020-03-01T10:13:22+02:00", "lastDuration": 802, "nextRun": "2020-03-30T10:00:00+02:00", "avgDuration": 795, "backupMode": "file", "targetType": "local", "isEnabled": true, "scheduleType": "daily", "scheduleEvents": [], "lastModifiedDate": "2020-02-28T04:10:30.0325436+03:00", "lastModifiedBy": "vspc\\administrator", "failureMessage": null, "backedUpSize": 16354212 }
] }
"""  # noqa: E501

# A 3.7-era job with every field present, a failure, big sizes, mixed offsets and an unknown field.
FULL_JOB = r"""
{"instanceUid": "C0FFEE00-1234-4ABC-8DEF-0123456789AB",
 "backupAgentUid": "0b7e1c2d-3f4a-4b5c-8d9e-0f1a2b3c4d5e",
 "organizationUid": "aa11bb22-cc33-4d44-8e55-ff6677889900",
 "name": "Server: Entire computer. Cloud repository.",
 "description": "Nightly image of \u0421\u0435\u0440\u0432\u0435\u0440-1\u0421",
 "configUid": "11111111-2222-4333-8444-555555555555",
 "backupPolicyUid": "99999999-8888-4777-8666-555555555555",
 "backupPolicyName": "B\u00fcro: Dateisicherung t\u00e4glich",
 "backupPolicyAssignStatus": "FAILEDTOAPPLY",
 "backupPolicyFailureMessage": "Failed to apply backup policy.\r\nThe agent is not reachable.",
 "status": "FAILED",
 "operationMode": "unlicensed",
 "destination": "\\\\nas01\\backup",
 "restorePoints": 14,
 "lastRun": "2025-12-11T23:30:26.1830000+00:00",
 "lastEndTime": "2025-12-12T05:01:02.9999996+05:30",
 "lastDuration": 1836,
 "nextRun": "2025-12-12T23:30:00Z",
 "avgDuration": 2000,
 "backupMode": "entirecomputer",
 "targetType": "cloud",
 "isEnabled": false,
 "scheduleType": "periodically",
 "scheduleEvents": ["atLock", "WHENBACKUPTARGETISCONNECTED", "AtUnplug"],
 "lastModifiedDate": "2025-11-30T08:15:00.5-08:00",
 "lastModifiedBy": "vspc\\svc_backup",
 "failureMessage": "Not enough free space on D:\\ (required: 12.4 GB).",
 "backedUpSize": 5497558138880,
 "freeSpace": 3328599654,
 "immutability": {"isEnabled": true, "days": 14}}
"""


def tz(hours: int, minutes: int = 0) -> timezone:
    return timezone(timedelta(hours=hours, minutes=minutes))


SEED_JOBS: list[dict[str, Any]] = json.loads(SEED_PAGE)["data"]

EXPECTED_ROWS: dict[str, dict[str, object]] = {
    "seed job 1": {
        "instance_uid": "724111ac-15f5-bf02-604d-20862fbafece",
        "backup_agent_uid": "07673b42-89fb-7227-9c6a-95e6908f25de",
        "organization_uid": "20c8486b-8c20-4b24-86a5-7cf31751c504",
        "name": "Workstation: File level backup. Personal files. Local drive. "
        "Daily schedule._restv3em",
        "description": None,
        "config_uid": "4610eb17-b41c-4cc5-81d1-938e57d89b7a",
        "backup_policy_uid": "7d953629-677a-408f-88ed-9b61031b8151",
        "backup_policy_name": None,
        "backup_policy_assign_status": None,
        "backup_policy_failure_message": None,
        "status": "Success",
        "operation_mode": "Workstation",
        "destination": "C:\\VeeamBackup",
        "restore_points": 4,
        "last_run": datetime(2020, 3, 1, 11, 35, tzinfo=tz(3)),
        "last_end_time": datetime(2020, 3, 1, 11, 45, 13, tzinfo=tz(3)),
        "last_duration": 613,
        "next_run": datetime(2020, 3, 2, 11, 30, tzinfo=tz(3)),
        "avg_duration": 575,
        "backup_mode": "File",
        "target_type": "Local",
        "is_enabled": True,
        "schedule_type": "Daily",
        "schedule_events": [],
        "last_modified_date": datetime(2020, 2, 28, 4, 17, 34, 507218, tzinfo=tz(3)),
        "last_modified_by": "vspc\\administrator",
        "failure_message": None,
        "backed_up_size": 12550788,
        "free_space": None,
    },
    "seed job 2": {
        "instance_uid": "3d29a667-2026-2f74-1143-18e04ba3c8e2",
        "backup_agent_uid": "19873b42-32ea-bbc5-e764-74d8f6ebd698",
        "organization_uid": "20c8486b-8c20-4b24-86a5-7cf31751c504",
        "name": "Workstation: File level backup. Personal files. Local drive. "
        "Daily schedule._restv3vawServ1",
        "description": None,
        "config_uid": "7416ea5c-1773-4e3e-86d8-71de3b54418f",
        "backup_policy_uid": "d598ae5a-eb96-42f0-9168-66d5d0ab2de0",
        "backup_policy_name": None,
        "backup_policy_assign_status": None,
        "backup_policy_failure_message": None,
        "status": "Success",
        "operation_mode": "Workstation",
        "destination": "C:\\VeeamBackup",
        "restore_points": 4,
        "last_run": datetime(2020, 3, 1, 10, 0, tzinfo=tz(2)),
        "last_end_time": datetime(2020, 3, 1, 10, 13, 22, tzinfo=tz(2)),
        "last_duration": 802,
        "next_run": datetime(2020, 3, 30, 10, 0, tzinfo=tz(2)),
        "avg_duration": 795,
        "backup_mode": "File",
        "target_type": "Local",
        "is_enabled": True,
        "schedule_type": "Daily",
        "schedule_events": [],
        # .0325436 rounds to 032544 microseconds
        "last_modified_date": datetime(2020, 2, 28, 4, 10, 30, 32544, tzinfo=tz(3)),
        "last_modified_by": "vspc\\administrator",
        "failure_message": None,
        "backed_up_size": 16354212,
        "free_space": None,
    },
    "full job": {
        "instance_uid": "C0FFEE00-1234-4ABC-8DEF-0123456789AB",
        "backup_agent_uid": "0b7e1c2d-3f4a-4b5c-8d9e-0f1a2b3c4d5e",
        "organization_uid": "aa11bb22-cc33-4d44-8e55-ff6677889900",
        "name": "Server: Entire computer. Cloud repository.",
        "description": "Nightly image of \u0421\u0435\u0440\u0432\u0435\u0440-1\u0421",
        "config_uid": "11111111-2222-4333-8444-555555555555",
        "backup_policy_uid": "99999999-8888-4777-8666-555555555555",
        "backup_policy_name": "Büro: Dateisicherung täglich",
        "backup_policy_assign_status": "FailedToApply",
        "backup_policy_failure_message": "Failed to apply backup policy.\r\n"
        "The agent is not reachable.",
        "status": "Failed",
        "operation_mode": "UnLicensed",
        "destination": "\\\\nas01\\backup",
        "restore_points": 14,
        "last_run": datetime(2025, 12, 11, 23, 30, 26, 183000, tzinfo=UTC),
        # .9999996 carries into the next second
        "last_end_time": datetime(2025, 12, 12, 5, 1, 3, tzinfo=tz(5, 30)),
        "last_duration": 1836,
        "next_run": datetime(2025, 12, 12, 23, 30, tzinfo=UTC),
        "avg_duration": 2000,
        "backup_mode": "EntireComputer",
        "target_type": "Cloud",
        "is_enabled": False,
        "schedule_type": "Periodically",
        "schedule_events": ["AtLock", "WhenBackupTargetIsConnected", "AtUnplug"],
        "last_modified_date": datetime(2025, 11, 30, 8, 15, 0, 500000, tzinfo=tz(-8)),
        "last_modified_by": "vspc\\svc_backup",
        "failure_message": "Not enough free space on D:\\ (required: 12.4 GB).",
        "backed_up_size": 5497558138880,
        "free_space": 3328599654,
    },
}
RECORDS: dict[str, dict[str, Any]] = {
    "seed job 1": SEED_JOBS[0],
    "seed job 2": SEED_JOBS[1],
    "full job": json.loads(FULL_JOB),
}

COLUMN_TYPES = {
    "uuid": str, "text": str, "enum": str, "int32": int, "int64": int, "bool": bool,
    "timestamp": datetime, "enum_list": list,
}  # fmt: skip


MISSING: Any = object()


def job(**changes: Any) -> dict[str, Any]:
    """A fresh copy of the full job; ``MISSING`` as a value removes the field."""
    record: dict[str, Any] = json.loads(FULL_JOB)
    for api, value in changes.items():
        if value is MISSING:
            del record[api]
        else:
            record[api] = value
    return record


def column(record: dict[str, Any], name: str) -> object:
    return transform_record(record)[BUSINESS_COLUMNS.index(name)]


def rejection(record: object) -> RecordRejected:
    with pytest.raises(RecordRejected) as info:
        transform_record(record)
    return info.value


# ------------------------------------------------------------------------------- the mapping


def test_business_columns_follow_the_contract_order() -> None:
    assert BUSINESS_COLUMNS == (
        "instance_uid", "backup_agent_uid", "organization_uid", "name", "description",
        "config_uid", "backup_policy_uid", "backup_policy_name", "backup_policy_assign_status",
        "backup_policy_failure_message", "status", "operation_mode", "destination",
        "restore_points", "last_run", "last_end_time", "last_duration", "next_run",
        "avg_duration", "backup_mode", "target_type", "is_enabled", "schedule_type",
        "schedule_events", "last_modified_date", "last_modified_by", "failure_message",
        "backed_up_size", "free_space",
    )  # fmt: skip


def test_each_field_is_the_camel_case_of_its_column_with_its_kind() -> None:
    kinds = {field.api: field.kind for field in FIELDS}
    assert kinds == {
        "instanceUid": "uuid", "backupAgentUid": "uuid", "organizationUid": "uuid",
        "name": "text", "description": "text", "configUid": "uuid", "backupPolicyUid": "uuid",
        "backupPolicyName": "text", "backupPolicyAssignStatus": "enum",
        "backupPolicyFailureMessage": "text", "status": "enum", "operationMode": "enum",
        "destination": "text", "restorePoints": "int32", "lastRun": "timestamp",
        "lastEndTime": "timestamp", "lastDuration": "int32", "nextRun": "timestamp",
        "avgDuration": "int32", "backupMode": "enum", "targetType": "enum", "isEnabled": "bool",
        "scheduleType": "enum", "scheduleEvents": "enum_list", "lastModifiedDate": "timestamp",
        "lastModifiedBy": "text", "failureMessage": "text", "backedUpSize": "int64",
        "freeSpace": "int64",
    }  # fmt: skip
    for field in FIELDS:
        head, *rest = field.column.split("_")
        assert field.api == head + "".join(part.title() for part in rest)
        assert (field.spellings is not None) == (field.kind in ("enum", "enum_list"))


@pytest.mark.parametrize("name", EXPECTED_ROWS)
def test_every_column_is_mapped_to_its_exact_value(name: str) -> None:
    row = transform_record(RECORDS[name])

    assert dict(zip(BUSINESS_COLUMNS, row, strict=True)) == EXPECTED_ROWS[name]
    for field, value in zip(FIELDS, row, strict=True):
        if value is not None:
            assert type(value) is COLUMN_TYPES[field.kind], field.api
        if isinstance(value, datetime):  # same instant, and the sender's own offset kept
            expected = EXPECTED_ROWS[name][field.column]
            assert isinstance(expected, datetime)
            assert value.utcoffset() == expected.utcoffset()


def test_the_record_is_not_modified() -> None:
    record = RECORDS["full job"]
    before = copy.deepcopy(record)
    transform_record(record)
    assert record == before


def test_seed_offsets_keep_the_instant() -> None:
    first, second = (transform_record(record) for record in SEED_JOBS)
    last_run = BUSINESS_COLUMNS.index("last_run")
    assert first[last_run] == datetime(2020, 3, 1, 8, 35, tzinfo=UTC)
    assert second[last_run] == datetime(2020, 3, 1, 8, 0, tzinfo=UTC)


OPTIONAL_FIELDS = [field for field in FIELDS if field.api not in ("instanceUid", "status")]


@pytest.mark.parametrize("field", OPTIONAL_FIELDS, ids=lambda field: field.api)
@pytest.mark.parametrize("how", ["absent", "null"])
def test_absent_and_null_fields_both_give_none(field: Any, how: str) -> None:
    record = job(**{field.api: MISSING if how == "absent" else None})
    row = transform_record(record)
    expected = dict(zip(BUSINESS_COLUMNS, transform_record(job()), strict=True))
    expected[field.column] = None
    assert dict(zip(BUSINESS_COLUMNS, row, strict=True)) == expected


def test_a_record_with_only_the_required_fields() -> None:
    row = transform_record({"instanceUid": "724111ac-15f5-bf02-604d-20862fbafece", "status": "x"})
    assert row == ("724111ac-15f5-bf02-604d-20862fbafece",) + (None,) * 9 + ("x",) + (None,) * 18


# ------------------------------------------------------------------------------------ enums

SPECIFICATION = {
    "status": [
        "None", "Success", "Warning", "Failed", "Running", "Starting", "Stopping", "Unknown",
    ],
    "operationMode": ["Server", "Workstation", "UnLicensed", "Unknown"],
    "backupMode": ["EntireComputer", "Volume", "File", "Unknown"],
    "targetType": ["Local", "Cloud", "Unknown"],
    "scheduleType": ["NotScheduled", "Daily", "Monthly", "Periodically", "Continuously", "Unknown"],
    "backupPolicyAssignStatus": [
        "Unknown", "Applying", "Assigned", "Unassigned", "Custom", "Deleting", "FailedToApply",
        "Outdated", "Warning",
    ],
    "scheduleEvents": ["AtLock", "AtLogoff", "WhenBackupTargetIsConnected", "Unknown"],
}  # fmt: skip
SPELLING_CASES = [
    pytest.param(api, sent, spelled, id=f"{api}={sent}")
    for api, values in SPECIFICATION.items()
    for spelled in values
    for sent in dict.fromkeys([
        spelled, spelled.lower(), spelled.upper(), spelled.swapcase(),
        spelled[0].lower() + spelled[1:],
    ])
]  # fmt: skip


@pytest.mark.parametrize(("api", "sent", "spelled"), SPELLING_CASES)
def test_enums_take_the_specification_spelling_in_any_case(
    api: str, sent: str, spelled: str
) -> None:
    field = next(field for field in FIELDS if field.api == api)
    value: Any = [sent] if field.kind == "enum_list" else sent
    expected: Any = [spelled] if field.kind == "enum_list" else spelled
    assert column(job(**{api: value}), field.column) == expected


@pytest.mark.parametrize(
    ("api", "sent"),
    [
        ("status", "Paused"),  # a value a later console may add
        ("status", "success "),  # not trimmed: kept exactly
        ("status", " "),
        ("operationMode", "Hybrid"),
        ("operationMode", ""),
        ("backupMode", "entire_computer"),
        ("targetType", "objectStorage"),
        ("scheduleType", "weekly"),
        ("backupPolicyAssignStatus", "Applied"),
        ("operationMode", "Wor\u212astation"),  # Kelvin sign: lower() is "k", but it is not K
        ("status", "SUCCESS\u0130"),
    ],
)
def test_unknown_enum_values_are_kept_exactly_as_received(api: str, sent: str) -> None:
    field = next(field for field in FIELDS if field.api == api)
    assert column(job(**{api: sent}), field.column) == sent


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ([], []),
        (["atlock"], ["AtLock"]),
        (["ATLOGOFF", "atLock", "AtLock"], ["AtLogoff", "AtLock", "AtLock"]),
        (["whenbackuptargetisconnected", "OnIdle"], ["WhenBackupTargetIsConnected", "OnIdle"]),
        (["unknown", ""], ["Unknown", ""]),
    ],
)
def test_schedule_events_are_a_list_of_spelled_values(sent: list[str], expected: list[str]) -> None:
    assert column(job(scheduleEvents=sent), "schedule_events") == expected


def test_normalize_enum_directly() -> None:
    spellings = next(field for field in FIELDS if field.api == "operationMode").spellings
    assert spellings is not None
    assert normalize_enum("unlicensed", spellings) == "UnLicensed"
    assert normalize_enum("UNLICENSED", spellings) == "UnLicensed"
    assert normalize_enum("Unlicensed2", spellings) == "Unlicensed2"
    assert normalize_enum("Server", spellings) == "Server"


# ------------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ("2025-12-11T23:30:26.1830000+00:00", datetime(2025, 12, 11, 23, 30, 26, 183000, UTC)),
        ("2020-03-01T11:35:00+03:00", datetime(2020, 3, 1, 11, 35, 0, 0, tz(3))),
        ("2020-02-28T04:10:30.0325436+03:00", datetime(2020, 2, 28, 4, 10, 30, 32544, tz(3))),
        ("2020-02-28T04:17:34.507218+03:00", datetime(2020, 2, 28, 4, 17, 34, 507218, tz(3))),
        ("2020-03-01T11:35:00Z", datetime(2020, 3, 1, 11, 35, 0, 0, UTC)),
        ("2020-03-01T11:35:00.5Z", datetime(2020, 3, 1, 11, 35, 0, 500000, UTC)),
        ("2020-03-01T11:35:00.25Z", datetime(2020, 3, 1, 11, 35, 0, 250000, UTC)),
        ("2020-03-01T11:35:00.125Z", datetime(2020, 3, 1, 11, 35, 0, 125000, UTC)),
        ("2020-03-01T11:35:00.1234Z", datetime(2020, 3, 1, 11, 35, 0, 123400, UTC)),
        ("2020-03-01T11:35:00.12345Z", datetime(2020, 3, 1, 11, 35, 0, 123450, UTC)),
        ("2020-03-01T11:35:00.123456Z", datetime(2020, 3, 1, 11, 35, 0, 123456, UTC)),
        ("2020-03-01T11:35:00.1234564Z", datetime(2020, 3, 1, 11, 35, 0, 123456, UTC)),
        ("2020-03-01T11:35:00.1234565Z", datetime(2020, 3, 1, 11, 35, 0, 123457, UTC)),
        ("2020-03-01T11:35:00.0000004Z", datetime(2020, 3, 1, 11, 35, 0, 0, UTC)),
        ("2020-03-01T11:35:00.0000005Z", datetime(2020, 3, 1, 11, 35, 0, 1, UTC)),
        ("2020-03-01T11:35:00.9999994Z", datetime(2020, 3, 1, 11, 35, 0, 999999, UTC)),
        ("2020-03-01T11:35:00.9999995Z", datetime(2020, 3, 1, 11, 35, 1, 0, UTC)),
        ("2020-12-31T23:59:59.9999996-05:30", datetime(2021, 1, 1, 0, 0, 0, 0, tz(-5, -30))),
        ("2020-02-28T23:59:59.9999999+01:00", datetime(2020, 2, 29, 0, 0, 0, 0, tz(1))),
        ("2020-02-29T12:00:00+05:45", datetime(2020, 2, 29, 12, 0, 0, 0, tz(5, 45))),
        ("2020-03-01T00:00:00-08:00", datetime(2020, 3, 1, 0, 0, 0, 0, tz(-8))),
        ("2020-03-01T00:00:00-00:00", datetime(2020, 3, 1, 0, 0, 0, 0, UTC)),
        ("2020-03-01T00:00:00+14:00", datetime(2020, 3, 1, 0, 0, 0, 0, tz(14))),
        ("2020-03-01T00:00:00-23:59", datetime(2020, 3, 1, 0, 0, 0, 0, tz(-23, -59))),
        ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),  # .NET DateTime.MinValue
        # .NET DateTime.MaxValue: rounding stops at the last microsecond datetime can hold
        ("9999-12-31T23:59:59.9999999+00:00", datetime(9999, 12, 31, 23, 59, 59, 999999, UTC)),
        ("9999-12-31T23:59:59.9999995+03:00", datetime(9999, 12, 31, 23, 59, 59, 999999, tz(3))),
        ("9999-12-31T23:59:59.9999999", datetime(9999, 12, 31, 23, 59, 59, 999999, UTC)),
        # no offset: read as UTC (the module docstring says why)
        ("2020-03-01T11:35:00", datetime(2020, 3, 1, 11, 35, 0, 0, UTC)),
        ("2020-03-01T11:35:00.1234567", datetime(2020, 3, 1, 11, 35, 0, 123457, UTC)),
    ],
)
def test_timestamps_keep_their_instant_and_offset(sent: str, expected: datetime) -> None:
    parsed = parse_timestamp(sent)
    assert parsed == expected
    assert parsed.utcoffset() == expected.utcoffset()
    assert column(job(lastRun=sent), "last_run") == expected


BAD_TIMESTAMPS = [
    "2020-13-01T00:00:00Z",
    "2020-00-10T00:00:00Z",
    "2020-02-30T00:00:00Z",
    "2021-02-29T00:00:00Z",
    "2020-03-01T25:00:00Z",
    "2020-03-01T11:60:00Z",
    "2020-03-01T11:35:60Z",  # leap seconds: .NET never writes them
    "0000-01-01T00:00:00Z",
    "2020-03-01 11:35:00+03:00",
    "2020-03-01t11:35:00Z",
    "2020-03-01T11:35:00z",
    "2020-03-01T11:35:00.12345678Z",  # 8 digits: more than .NET's ticks
    "2020-03-01T11:35:00.Z",
    "2020-03-01T11:35:00,5Z",
    "2020-03-01T11:35:00+0300",
    "2020-03-01T11:35:00+03",
    "2020-03-01T11:35:00+3:00",
    "2020-03-01T11:35:00+14:60",  # fromisoformat would read it as +15:00
    "2020-03-01T11:35:00+24:00",
    "2020-03-01T11:35:00Z+03:00",
    "2020-03-01T11:35Z",
    "2020-03-01",
    "20200301T113500Z",
    "2020-W09-7T11:35:00Z",
    "+2020-03-01T11:35:00Z",
    "2020-03-01T11:35:00Z\n",
    " 2020-03-01T11:35:00Z",
    "\u0662\u0660\u0662\u0660-03-01T11:35:00Z",  # Arabic-Indic digits are digits to \d, not to us
    "",
    "now",
    "/Date(1583051700000+0300)/",
]


@pytest.mark.parametrize("sent", BAD_TIMESTAMPS)
@pytest.mark.parametrize("api", ["lastRun", "lastEndTime", "nextRun", "lastModifiedDate"])
def test_bad_timestamps_are_rejected_naming_the_field_and_value(api: str, sent: str) -> None:
    error = rejection(job(**{api: sent}))
    assert error.field == api
    assert error.reason.startswith(f"field {api}: {sent!r} is not ")
    assert "ISO-8601 timestamp" in error.reason or "not a real date and time" in error.reason
    with pytest.raises(ValueError, match="is not"):
        parse_timestamp(sent)


def test_timestamp_reasons_say_what_was_expected() -> None:
    assert rejection(job(lastRun="2020-13-01T00:00:00Z")).reason == (
        "field lastRun: '2020-13-01T00:00:00Z' is not a real date and time (month must be in 1..12)"
    )
    assert rejection(job(nextRun="2020-03-01 11:35:00")).reason == (
        "field nextRun: '2020-03-01 11:35:00' is not an ISO-8601 timestamp "
        "(YYYY-MM-DDTHH:MM:SS[.fffffff] with Z or ±HH:MM)"
    )


@pytest.mark.parametrize("sent", [1583051700, 1583051700.5, True, ["2020-03-01T11:35:00Z"], {}])
def test_a_timestamp_that_is_not_a_string_is_rejected(sent: object) -> None:
    error = rejection(job(lastEndTime=sent))
    assert error.field == "lastEndTime"
    assert error.reason.startswith("field lastEndTime: expected an ISO-8601 timestamp string, got ")


def test_a_long_bad_timestamp_is_quoted_only_in_part() -> None:
    error = rejection(job(lastRun="2020-03-01T11:35:00Z" + "9" * 100_000))
    assert error.field == "lastRun"
    assert len(error.reason) < 250
    assert "..." in error.reason


offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


@given(st.datetimes(timezones=offsets))
def test_isoformat_round_trips(moment: datetime) -> None:
    parsed = parse_timestamp(moment.isoformat())
    assert parsed == moment
    assert parsed.utcoffset() == moment.utcoffset()


@given(
    st.datetimes(max_value=datetime(9999, 12, 30)),
    st.integers(min_value=0, max_value=9_999_999),
)
def test_seven_digit_fractions_round_half_up(moment: datetime, ticks: int) -> None:
    sent = f"{moment.isoformat(timespec='seconds')}.{ticks:07d}Z"
    micro = int((Decimal(ticks) / 10).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    expected = moment.replace(microsecond=0, tzinfo=UTC) + timedelta(microseconds=micro)
    assert parse_timestamp(sent) == expected


# ------------------------------------------------------------------------------- rejections

UID = "724111ac-15f5-bf02-604d-20862fbafece"
REJECTIONS = [
    # instanceUid: required, a canonical UUID string
    ("instanceUid", MISSING, "instanceUid", "is missing, but every job must have one"),
    ("instanceUid", None, "instanceUid", "is null, but every job must have one"),
    ("instanceUid", "", "instanceUid", "the string '' is not a UUID"),
    ("instanceUid", "not-a-uuid", "instanceUid", "'not-a-uuid' is not a UUID"),
    ("instanceUid", UID[:-1] + "g", "instanceUid", "is not a UUID"),
    ("instanceUid", UID[:-1], "instanceUid", "is not a UUID"),
    ("instanceUid", UID.replace("-", ""), "instanceUid", "is not a UUID"),
    ("instanceUid", "{" + UID + "}", "instanceUid", "is not a UUID"),
    ("instanceUid", "urn:uuid:" + UID, "instanceUid", "is not a UUID"),
    ("instanceUid", " " + UID, "instanceUid", "is not a UUID"),
    ("instanceUid", UID.replace("-", "_"), "instanceUid", "is not a UUID"),
    ("instanceUid", 724111, "instanceUid", "the number 724111 is not a UUID"),
    ("instanceUid", [UID], "instanceUid", "an array is not a UUID"),
    # status: required, a non-empty string
    ("status", MISSING, "status", "is missing, but every job must have one"),
    ("status", None, "status", "is null, but every job must have one"),
    ("status", "", "status", "is an empty string, but every job must have a status"),
    ("status", 1, "status", "expected a string, got the number 1"),
    ("status", ["Success"], "status", "expected a string, got an array"),
    # the other UUIDs
    ("backupAgentUid", "abc", "backupAgentUid", "the string 'abc' is not a UUID"),
    ("organizationUid", 5, "organizationUid", "the number 5 is not a UUID"),
    ("configUid", {}, "configUid", "an object is not a UUID"),
    ("backupPolicyUid", "", "backupPolicyUid", "the string '' is not a UUID"),
    ("backupPolicyUid", True, "backupPolicyUid", "true is not a UUID"),
    # text
    ("name", 5, "name", "expected a string, got the number 5"),
    ("description", ["a"], "description", "expected a string, got an array"),
    ("destination", True, "destination", "expected a string, got true"),
    ("lastModifiedBy", {}, "lastModifiedBy", "expected a string, got an object"),
    ("failureMessage", 1.5, "failureMessage", "expected a string, got the number 1.5"),
    ("backupPolicyName", False, "backupPolicyName", "expected a string, got false"),
    ("backupPolicyFailureMessage", 0, "backupPolicyFailureMessage", "got the number 0"),
    # 32-bit integers
    ("restorePoints", "4", "restorePoints", "expected a 32-bit integer, got the string '4'"),
    ("restorePoints", True, "restorePoints", "expected a 32-bit integer, got true"),
    ("restorePoints", 4.5, "restorePoints", "expected a 32-bit integer, got the number 4.5"),
    ("restorePoints", 2**31, "restorePoints", "2147483648 is outside the 32-bit integer range"),
    ("lastDuration", -(2**31) - 1, "lastDuration", "-2147483649 is outside the 32-bit"),
    ("lastDuration", 3e9, "lastDuration", "3000000000.0 is outside the 32-bit integer range"),
    ("avgDuration", [1], "avgDuration", "expected a 32-bit integer, got an array"),
    # 64-bit integers
    ("backedUpSize", 2**63, "backedUpSize", "9223372036854775808 is outside the 64-bit"),
    ("backedUpSize", 9.3e19, "backedUpSize", "9.3e+19 is outside the 64-bit integer range"),
    ("freeSpace", -(2**63) - 1, "freeSpace", "is outside the 64-bit integer range"),
    ("freeSpace", 10**400, "freeSpace", "a 1329-bit integer is outside the 64-bit integer"),
    ("freeSpace", 2.0**60, "freeSpace", "is a float too large to be exact"),
    ("backedUpSize", "12550788", "backedUpSize", "expected a 64-bit integer, got the string"),
    ("freeSpace", False, "freeSpace", "expected a 64-bit integer, got false"),
    # booleans
    ("isEnabled", "true", "isEnabled", "expected true or false, got the string 'true'"),
    ("isEnabled", 1, "isEnabled", "expected true or false, got the number 1"),
    ("isEnabled", 0, "isEnabled", "expected true or false, got the number 0"),
    # enums
    ("operationMode", 1, "operationMode", "expected a string, got the number 1"),
    ("backupMode", ["file"], "backupMode", "expected a string, got an array"),
    ("targetType", True, "targetType", "expected a string, got true"),
    ("scheduleType", {}, "scheduleType", "expected a string, got an object"),
    ("backupPolicyAssignStatus", 3, "backupPolicyAssignStatus", "got the number 3"),
    ("scheduleEvents", "AtLock", "scheduleEvents", "expected an array of strings, got the str"),
    ("scheduleEvents", {"a": 1}, "scheduleEvents", "expected an array of strings, got an obj"),
    ("scheduleEvents", [1], "scheduleEvents[0]", "expected a string, got the number 1"),
    ("scheduleEvents", ["AtLock", None], "scheduleEvents[1]", "expected a string, got null"),
]


@pytest.mark.parametrize(
    ("api", "sent", "field", "fragment"),
    REJECTIONS,
    ids=[f"{api}={sent!r:.40}" for api, sent, _, _ in REJECTIONS],
)
def test_each_rule_rejects_naming_the_field(
    api: str, sent: object, field: str, fragment: str
) -> None:
    error = rejection(job(**{api: sent}))
    assert error.field == field
    assert error.reason.startswith(f"field {field}: ")
    assert fragment in error.reason
    assert str(error) == error.reason


@pytest.mark.parametrize(
    ("api", "sent", "expected"),
    [
        ("restorePoints", 2**31 - 1, 2**31 - 1),
        ("restorePoints", -(2**31), -(2**31)),
        ("restorePoints", 0, 0),
        ("lastDuration", 613.0, 613),  # an integral float is taken as the integer
        ("lastDuration", -0.0, 0),
        ("backedUpSize", 2**63 - 1, 2**63 - 1),
        ("backedUpSize", -(2**63), -(2**63)),
        ("freeSpace", 2.0**53, 2**53),
        ("freeSpace", 12550788.0, 12550788),
    ],
)
def test_integers_at_the_edges_are_accepted(api: str, sent: object, expected: int) -> None:
    field = next(field for field in FIELDS if field.api == api)
    value = column(job(**{api: sent}), field.column)
    assert value == expected
    assert type(value) is int


def test_an_upper_case_instance_uid_is_accepted() -> None:
    # Passed on as received: PostgreSQL stores it as the uuid, whatever the case.
    assert column(job(instanceUid=UID.upper()), "instance_uid") == UID.upper()


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ([], "the record is not a JSON object (got an array)"),
        ("job", "the record is not a JSON object (got the string 'job')"),
        (None, "the record is not a JSON object (got null)"),
        (42, "the record is not a JSON object (got the number 42)"),
        (True, "the record is not a JSON object (got true)"),
    ],
)
def test_a_record_that_is_not_an_object_is_rejected(record: object, reason: str) -> None:
    error = rejection(record)
    assert error.field is None
    assert error.reason == reason


# Strings PostgreSQL cannot store, anywhere in the record, as a server would send them.
UNSTORABLE = [
    (r'"name": "Backup\u0000job"', "name", "the string contains a NUL character"),
    (r'"destination": "C:\\\ud800"', "destination", "contains a lone surrogate (U+D800)"),
    (r'"failureMessage": "\udfff tail"', "failureMessage", "contains a lone surrogate (U+DFFF)"),
    (r'"instanceUid": "\u0000"', "instanceUid", "contains a NUL character"),
    (r'"status": "Success\u0000"', "status", "contains a NUL character"),
    (r'"scheduleEvents": ["AtLock", "At\u0000Logoff"]', "scheduleEvents[1]", "NUL character"),
    (r'"futureField": {"x": "\u0000"}', "futureField.x", "the string contains a NUL character"),
    (r'"futureField": {"a": [1, {"b": "\ud83d"}]}', "futureField.a[1].b", "lone surrogate"),
    (r'"fut\u0000ure": 1', "fut\\u0000ure", "the key contains a NUL character"),
    (r'"futureField": {"k\udc00": 1}', "futureField.k\ufffd", "the key contains a lone surrogate"),
    (r'"restorePoints": NaN', "restorePoints", "NaN is not a JSON number"),
    (r'"backedUpSize": Infinity', "backedUpSize", "Infinity is not a JSON number"),
    (r'"futureField": [-Infinity]', "futureField[0]", "-Infinity is not a JSON number"),
    (r'"futureField": {"size": 1e400}', "futureField.size", "Infinity is not a JSON number"),
]


@pytest.mark.parametrize(("member", "field", "fragment"), UNSTORABLE)
def test_strings_and_numbers_jsonb_cannot_hold_are_rejected_by_path(
    member: str, field: str, fragment: str
) -> None:
    record = json.loads(FULL_JOB[: FULL_JOB.rindex("}")] + ", " + member + "}")
    error = rejection(record)
    assert error.field == field
    assert fragment in error.reason
    assert "PostgreSQL cannot store it" in error.reason
    for text in (error.reason, error.field):  # the reject itself must be storable
        assert "\x00" not in text
        text.encode("utf-8")


def test_paired_surrogates_are_one_character_and_fine() -> None:
    record = json.loads(FULL_JOB[: FULL_JOB.rindex("}")] + r', "name": "Backup \ud83d\ude00"}')
    assert column(record, "name") == "Backup \U0001f600"


@pytest.mark.parametrize("value", [b"bytes", (1, 2), {1, 2}, datetime(2020, 1, 1)])
def test_values_json_cannot_hold_are_rejected(value: object) -> None:
    error = rejection(job(futureField={"x": value}))
    assert error.field == "futureField.x"
    assert "is not a JSON value" in error.reason


def test_a_deeply_nested_unknown_field_is_walked_without_recursion() -> None:
    deep: Any = "\x00"
    for _ in range(50_000):
        deep = [deep]
    error = rejection(job(futureField=deep))
    # Rejected at MAX_DEPTH, before a recursive json.dumps could overflow (found by fuzzing).
    assert error.field == "futureField" + "[0]" * (MAX_DEPTH - 1)
    assert "nested more than 512 levels deep" in error.reason
    assert len(error.reason) < 350


def test_an_enormous_value_is_not_copied_into_the_reason() -> None:
    error = rejection(job(instanceUid="x" * 1_000_000))
    assert error.field == "instanceUid"
    assert len(error.reason) < 250


def test_unknown_fields_are_fine() -> None:
    record = job(futureField={"x": 1, "y": [None, True, 1.5, "z"]}, systemType="Windows")
    assert transform_record(record) == transform_record(job())


# -------------------------------------------------------------------------------- rejects


@pytest.mark.parametrize(
    ("record", "key"),
    [
        (job(), "C0FFEE00-1234-4ABC-8DEF-0123456789AB"),
        (job(instanceUid="not-a-uuid"), "not-a-uuid"),
        (job(instanceUid="a\x00b\ud800"), "a\\u0000b\ufffd"),
        (job(instanceUid=MISSING), None),
        (job(instanceUid=None), None),
        (job(instanceUid=42), None),
        (["not", "a", "record"], None),
        ("text", None),
    ],
)
def test_record_key_is_the_instance_uid_as_received(record: object, key: str | None) -> None:
    assert record_key(record) == key


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", "plain"),
        ("a\x00b", "a\\u0000b"),
        ("\x00\x00", "\\u0000\\u0000"),
        ("x\ud800y\udfff", "x\ufffdy\ufffd"),
        (
            "Backup \U0001f600 \u0421\u0435\u0440\u0432\u0435\u0440",
            "Backup \U0001f600 \u0421\u0435\u0440\u0432\u0435\u0440",
        ),
        (math.nan, "NaN"),
        (math.inf, "Infinity"),
        (-math.inf, "-Infinity"),
        (1.5, 1.5),
        (None, None),
        (True, True),
        (12550788, 12550788),
        (
            {"k\x00": ["v\ud800", {"n": math.nan}], "ok": [1, None]},
            {"k\\u0000": ["v\ufffd", {"n": "NaN"}], "ok": [1, None]},
        ),
        ([[[["\x00"]]]], [[[["\\u0000"]]]]),
        ({}, {}),
        ([], []),
    ],
)
def test_jsonb_safe_replaces_what_postgresql_cannot_store(value: object, expected: object) -> None:
    assert jsonb_safe(value) == expected


def test_jsonb_safe_copies_and_keeps_key_order() -> None:
    record = job(futureField={"z": ["\x00"], "a": 1})
    before = copy.deepcopy(record)
    safe = jsonb_safe(record)
    assert record == before
    assert isinstance(safe, dict)
    assert list(safe) == list(record)
    assert safe["futureField"] == {"z": ["\\u0000"], "a": 1}
    safe["futureField"]["a"] = 2
    assert record["futureField"]["a"] == 1


def test_jsonb_safe_handles_any_depth() -> None:
    deep: Any = math.inf
    for _ in range(50_000):
        deep = {"d": deep}
    safe = jsonb_safe(deep)
    for _ in range(50_000):
        assert isinstance(safe, dict)
        safe = safe["d"]
    assert safe == "Infinity"


# Any text, lone surrogates included (hypothesis leaves them out by default; json.loads does not).
any_text = st.text(st.characters(exclude_categories=()))
any_key = st.text(st.characters(exclude_categories=()), max_size=5)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(any_key, children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_jsonb_safe_output_is_storable_and_stable(value: object) -> None:
    safe = jsonb_safe(value)
    text = json.dumps(safe, allow_nan=False, ensure_ascii=False)
    text.encode("utf-8")
    assert "\x00" not in text
    assert jsonb_safe(safe) == safe
    record = {"instanceUid": UID, "status": "Success", "extra": safe}
    assert transform_record(record)[0] == UID


@given(
    st.dictionaries(
        st.sampled_from([field.api for field in FIELDS] + ["extra"]), json_values, max_size=12
    )
)
def test_any_record_gives_a_row_or_a_rejection(changes: dict[str, Any]) -> None:
    try:
        row = transform_record(job(**changes))
    except RecordRejected as error:
        reason = error.reason
    else:
        assert len(row) == len(BUSINESS_COLUMNS)
        return
    assert reason.startswith("field ")
    reason.encode("utf-8")
    assert "\x00" not in reason


# -- transform_with_raw: the row plus the text stored in `raw` ---------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"futureField": {"x": [1, 2.5, None]}},  # nested: the slow walk decides
        {"big": 2**70},  # beyond orjson's 64 bits: the standard library writes it
        {"name": "Büro-PC \u00e9\u4e2d"},
    ],
)
def test_raw_text_is_the_record(extra: dict[str, object]) -> None:
    record = {"instanceUid": "724111ac-15f5-bf02-604d-20862fbafece", "status": "success", **extra}
    row, raw = transform_with_raw(record)
    assert json.loads(raw) == record
    assert row == transform_record(record)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"name": "a\x00b"}, "name"),
        ({"futureField": {"x": "\ud800"}}, "futureField.x"),
        ({"ratio": float("nan")}, "ratio"),
    ],
)
def test_raw_fast_path_never_hides_unstorable_text(extra: dict[str, object], field: str) -> None:
    record = {"instanceUid": "724111ac-15f5-bf02-604d-20862fbafece", "status": "success", **extra}
    with pytest.raises(RecordRejected) as info:
        transform_with_raw(record)
    assert info.value.field == field


@pytest.mark.parametrize(
    "text",
    [
        "0b4a3b1e-1111-2222-3333-444455556666",
        "0B4A3B1E-ABCD-EF00-3333-FFFFFFFFFFFF",
        "00000000-0000-0000-0000-000000000000",
    ],
)
def test_the_staging_copy_writes_a_checked_uuid_as_its_16_bytes(text: str) -> None:
    """The transform passes a UUID on as text; the staging COPY's dumper writes its bytes."""
    (column,) = transform_record({"instanceUid": text, "status": "Success"})[:1]
    assert column == text
    assert _UuidTextBinaryDumper(str).dump(column) == uuid.UUID(text).bytes


def _outcome(record: object, dumped: bytes | None, by_orjson: bool) -> object:
    try:
        return transform_with_raw(record, dumped, by_orjson=by_orjson)
    except RecordRejected as error:
        return ("rejected", error.field, error.reason)


@given(
    st.dictionaries(
        st.sampled_from([field.api for field in FIELDS] + ["extra"]), json_values, max_size=12
    )
)
def test_an_array_orjson_decoded_skips_only_what_orjson_proved(changes: dict[str, Any]) -> None:
    """A record orjson decoded takes the shortcut; the outcome is the walk's."""
    # a lowercase uid (unless changed), so the record has a fingerprint: the shortcut needs it
    record = job(**{"instanceUid": UID, **changes})
    body = json.dumps({"data": [record]}).encode()  # NaN and surrogates as the wire has them
    try:
        decoded, by_orjson = decode_value(body)
    except RecursionError:
        return
    (record,) = decoded["data"]
    print_ = fingerprint(record)
    dumped = None if print_ is None else print_.text
    assert _outcome(record, dumped, by_orjson) == _outcome(record, dumped, False)


@pytest.mark.parametrize(
    ("body", "marked"),
    [
        (b'{"data": [{"a": 1.5, "s": "\\u00e9"}]}', True),
        (b'{"data": [{"a": NaN}]}', False),  # orjson refuses NaN: the standard library reads it
        (b'{"data": [{"s": "\\ud800"}]}', False),  # a lone surrogate, likewise
        (b'{"data": [{"n": 18446744073709551616}]}', False),  # beyond 64 bits, likewise
        (b'{"data": [{"a": 1e400}]}', False),  # infinity, likewise
    ],
)
def test_only_an_array_orjson_decoded_is_marked(body: bytes, marked: bool) -> None:
    assert decode_value(body)[1] is marked


def test_the_shortcut_still_finds_a_nul() -> None:
    record = {"instanceUid": UID, "status": "Success", "name": "a\x00b"}
    print_ = fingerprint(record)
    assert print_ is not None
    with pytest.raises(RecordRejected) as info:
        transform_with_raw(record, print_.text, by_orjson=True)
    assert info.value.field == "name"
