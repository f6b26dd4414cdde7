"""What a console's records look like: the specification's enums and fields, the .NET
timestamp form, and the vocabulary (names, paths, messages) the simulated data is drawn from.
"""

from __future__ import annotations

import functools
import random
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any


def words(text: str) -> tuple[str, ...]:
    """The words of ``text``, as a tuple (long lists of names read better this way)."""
    return tuple(text.split())


# Enum values as the specification spells them, and how often each is drawn.
_SPEC = {
    "status": "None Success Warning Failed Running Starting Stopping Unknown",
    "operationMode": "Server Workstation UnLicensed Unknown",
    "backupMode": "EntireComputer Volume File Unknown",
    "targetType": "Local Cloud Unknown",
    "scheduleType": "NotScheduled Daily Monthly Periodically Continuously Unknown",
    "backupPolicyAssignStatus": (
        "Unknown Applying Assigned Unassigned Custom Deleting FailedToApply Outdated Warning"
    ),
}
ENUMS: dict[str, tuple[str, ...]] = {name: words(text) for name, text in _SPEC.items()}
WEIGHTS: dict[str, tuple[int, ...]] = {
    "status": (6, 64, 9, 9, 4, 2, 2, 4),
    "operationMode": (30, 55, 10, 5),
    "backupMode": (25, 20, 50, 5),
    "targetType": (60, 35, 5),
    "scheduleType": (8, 50, 8, 20, 8, 6),
    "backupPolicyAssignStatus": (5, 3, 50, 5, 25, 2, 4, 4, 2),
}
SCHEDULE_EVENTS = ("AtLock", "AtLogoff", "WhenBackupTargetIsConnected", "Unknown")

JOB_FIELDS = words(
    """instanceUid backupAgentUid organizationUid name description configUid backupPolicyUid
    backupPolicyName backupPolicyAssignStatus backupPolicyFailureMessage status operationMode
    destination restorePoints lastRun lastEndTime lastDuration nextRun avgDuration backupMode
    targetType isEnabled scheduleType scheduleEvents lastModifiedDate lastModifiedBy
    failureMessage backedUpSize freeSpace"""
)
# Linux and Mac jobs: the Windows fields minus scheduleEvents, with the detailed targetType.
UNIX_JOB_FIELDS = tuple(name for name in JOB_FIELDS if name != "scheduleEvents")
UNIX_TARGET_TYPES = words("BackupRepository CloudRepository LocalFolder SharedFolder Unknown")
UNIX_TARGET_WEIGHTS = (30, 25, 30, 12, 3)
# The vendor's models (API 3.6/3.7): BackupAgent, WindowsBackupAgent, LinuxBackupAgent,
# MacBackupAgent, ManagementAgent, ProtectedComputerManagedByConsoleRestorePoint.
BACKUP_AGENT_FIELDS = words(
    """instanceUid agentPlatform status managementAgentStatus managementAgentUid siteUid
    organizationUid name operationMode platform version versionStatus activationTime
    managementMode installationType totalJobsCount runningJobsCount successJobsCount guiMode"""
)
WINDOWS_AGENT_FIELDS = ("instanceUid", "managementAgentUid", "cbtDriverStatus")
UNIX_AGENT_FIELDS = ("instanceUid", "managementAgentUid")
MANAGEMENT_AGENT_FIELDS = words(
    """instanceUid locationUid organizationUid hostName friendlyName lastHeartbeatTime version
    discoveryTime tag status type computerInfo connectionStatus isRebootRequired
    connectionAccount versionStatus role"""
)
COMPUTER_INFO_FIELDS = words(
    """uniqueUid biosUuid hostName fqdn guestOs guestOsType guestOsVersion guestOsSku
    platformType ipAddresses macAddresses applications"""
)
RESTORE_POINT_FIELDS = words(
    """instanceUid backupAgentUid jobUid backedupItems destination size incrementRawDataSize
    sourceSize creationDate"""
)
ORGANIZATION_FIELDS = ("instanceUid", "name", "alias", "type")
TIMESTAMP_FIELDS = frozenset(
    {
        "lastRun",
        "lastEndTime",
        "nextRun",
        "lastModifiedDate",
        "activationTime",
        "lastHeartbeatTime",
        "discoveryTime",
        "creationDate",
    }
)
PLATFORMS = ("windows", "linux", "mac")
SYSTEM_TYPES = {"windows": "Windows", "linux": "Linux", "mac": "Mac"}
# Fields a 3.5 console (VSPC 8.1) does not send at all.
LEGACY_ABSENT = ("description", "backupPolicyName", "backupPolicyAssignStatus")
FUTURE_FIELDS: tuple[dict[str, Any], ...] = (
    {"futureField": {"x": 1}},
    {"immutability": {"isEnabled": True, "days": 14}},
)


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()
"""Pass as a value to :meth:`World.mutate` to remove the field from the record."""

# Names are non-ASCII on purpose, Cyrillic included.
ORGS = (
    ("Acme Corp", "acme"),
    ("Globex", "globex"),
    ("Büro Müller GmbH", "buero-mueller"),
    ("ООО Ромашка", "romashka"),  # noqa: RUF001
    ("Initech", "initech"),
    ("Société d'Études Techniques", "set"),
    ("Umbrella Pharma", "umbrella"),
    ("Kjøbenhavn Arkitekter", "kbh-ark"),
    ("Hooli", "hooli"),
    ("Northwind Traders", "northwind"),
    ("Contoso", "contoso"),
    ("Vandelay Industries", "vandelay"),
)
SPECIAL_PCS = words("Büro-PC Сервер Сервер-1С Empfang-PC Bokföring-PC Réception-PC")  # noqa: RUF001
JOB_NAMES = (
    "Backup Job {computer}",
    "{computer} - entire computer",
    "Daily file backup ({computer})",
    "{computer} volume backup",
    "Ежедневное копирование",
    "Sicherung Büro",
)
LOCAL_TARGETS = (
    "C:\\VeeamBackup",
    "D:\\Backup",
    "E:\\VeeamBackup\\{computer}",
    "\\\\nas01\\backup\\{alias}",
    "\\\\{alias}-fs01\\Veeam$\\{computer}",
)
DESCRIPTIONS = (
    None,
    "",
    "Backup of user profiles\r\nManaged by VSPC",
    "Created by vspc\\administrator at {modified:%m/%d/%Y}.",
)
MODIFIERS = ("vspc\\administrator", "{ALIAS}\\{user}", "{user}@{alias}.local", None)
OFFSETS = (0, 0, 0, 60, 120, 180, 180, -300, -360, -480, 330, 540, 600, -210)
USERS = ("administrator", "jdoe", "m.mueller", "i.petrov", "svc_backup")
POLICIES = (
    "Workstation: File level backup. Personal files. Local drive. Daily schedule.",
    "Server: Entire computer. Cloud repository. Daily schedule.",
    "Server: Volume level backup. Local drive. Periodically.",
    "Laptop: File level backup. Cloud. At lock.",
    "Büro: Dateisicherung täglich",
)
FAILURES = (
    "Failed to connect to the backup repository.\r\nThe network path was not found.",
    "Not enough free space on D:\\ (required: 12.4 GB, available: 3.1 GB).",
    "Job has been stopped by user.",
    "Error: Access is denied.\r\nFailed to create volume snapshot.",
    "Unable to access \\\\nas01\\backup: The user name or password is incorrect.",
)
WARNINGS = (
    "Changed block tracking is disabled; the job will read the entire disk.",
    "File C:\\Users\\Public\\desktop.ini was skipped: it is in use by another process.",
    "Backup target is almost out of free space.",
)
UNIX_TARGETS: dict[str, dict[str, tuple[str, ...]]] = {
    "linux": {
        "LocalFolder": ("/mnt/backup", "/var/backups/veeam/{computer}", "/srv/veeam"),
        "SharedFolder": ("//nas01/backup/{alias}", "nfs01:/export/veeam/{computer}"),
    },
    "mac": {
        "LocalFolder": ("/Volumes/Backup", "/Volumes/Time Machine/Veeam/{computer}"),
        "SharedFolder": ("smb://nas01/backup/{alias}", "//{alias}-fs01/Veeam/{computer}"),
    },
}
LINUX_HOSTS = words("web db app mail files build proxy gitlab k8s-node")
MAC_HOSTS = ("MacBook-Pro", "MacBook-Air", "iMac", "Mac-mini", "Mac-Studio")
GUEST_OS = {
    "windows": (
        ("Microsoft Windows 11 Pro", "10.0.22631", "Workstation"),
        ("Microsoft Windows 10 Pro", "10.0.19045", "Workstation"),
        ("Microsoft Windows Server 2022 Standard", "10.0.20348", "Server"),
        ("Microsoft Windows Server 2019 Datacenter", "10.0.17763", "Server"),
    ),
    "linux": (
        ("Ubuntu 22.04.4 LTS", "5.15.0-105-generic", "Linux"),
        ("Red Hat Enterprise Linux 9.3", "5.14.0-362.el9", "Linux"),
        ("Debian GNU/Linux 12", "6.1.0-18-amd64", "Linux"),
    ),
    "mac": (
        ("macOS Sonoma 14.4", "23.4.0", "Mac"),
        ("macOS Ventura 13.6", "22.6.0", "Mac"),
    ),
}
AGENT_VERSIONS = {
    "windows": ("6.1.2.134", "6.2.0.121", "6.3.0.177", "5.0.3.4708"),
    "linux": ("6.1.0.1498", "6.2.0.101", "6.3.0.1036"),
    "mac": ("2.1.0.2042", "2.2.0.281"),
}
BACKED_UP_ITEMS = {
    "windows": {"EntireComputer": "Entire computer", "Volume": "C:\\, D:\\", "File": "C:\\Users"},
    "linux": {"EntireComputer": "Entire computer", "Volume": "/, /home", "File": "/home, /etc"},
    "mac": {"EntireComputer": "Entire computer", "Volume": "/", "File": "/Users"},
}
POLICY_FAILURES = (
    "Failed to apply backup policy.\r\nThe agent is not reachable: connection timed out.",
    "Policy settings conflict with a local job.\r\nRemove the local job and try again.",
)


def new_uid(rng: random.Random, value: int | None = None) -> str:
    return uid_text(rng.getrandbits(128) if value is None else value)


def uid_text(value: int) -> str:
    """A 128-bit number in the 8-4-4-4-12 form of a uid."""
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def fill(template: str | None, **values: Any) -> str | None:
    return None if template is None else template.format(**values)


def spell(value: str, style: str) -> str:
    """An enum value in one of the casings consoles were seen to send."""
    if style == "lower":
        return value.lower()
    if style == "camel":
        return value[0].lower() + value[1:]
    return value


_INSTANT = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?", re.ASCII)


@functools.lru_cache(maxsize=1 << 18)
def parse_instant(text: str) -> datetime | None:
    """A .NET round-trip timestamp as an aware datetime (digits past microseconds dropped).

    Cached: a filter or sort on ``creationDate`` reads every restore point's (the same strings
    from one request to the next), which took the simulator a second per query at 10,000 jobs.
    """
    match = _INSTANT.fullmatch(text)
    if match is None:
        return None
    base, fraction, offset = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    parsed = datetime.fromisoformat(base).replace(microsecond=micro)
    if offset in (None, "Z"):
        return parsed.replace(tzinfo=UTC)
    return datetime.fromisoformat(f"{parsed.isoformat()}{offset}")


def format_timestamp(dt: datetime, tz: timezone, digits: int) -> str:
    """.NET round-trip form: local time of the machine, 0/6/7 fractional digits, ``+hh:mm``."""
    local = dt.astimezone(tz)
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    if digits == 6:
        text += f".{local.microsecond:06d}"
    elif digits == 7:
        # .NET keeps 100 ns ticks; the seventh digit is made up but stable.
        text += f".{local.microsecond:06d}{local.microsecond * 3 % 10}"
    minutes = int((local.utcoffset() or timedelta()).total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"{text}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
