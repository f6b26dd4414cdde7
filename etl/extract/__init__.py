"""Extract stage: read collections from the VSPC REST API v3.

``VspcClient`` speaks the protocol (authentication, retries, 202 async actions);
``iter_pages`` walks one collection page by page and reports what looked wrong.
"""

from etl.extract.auth import ApiKeyAuth, PasswordAuth
from etl.extract.client import ClientStats, RetryPolicy, VspcClient
from etl.extract.pager import SORT_BY_INSTANCE_UID, Page, PassReport, iter_pages

__all__ = [
    "SORT_BY_INSTANCE_UID",
    "ApiKeyAuth",
    "ClientStats",
    "Page",
    "PassReport",
    "PasswordAuth",
    "RetryPolicy",
    "VspcClient",
    "iter_pages",
]
