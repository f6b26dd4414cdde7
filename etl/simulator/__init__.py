"""A loopback stand-in for the Veeam Service Provider Console REST API v3.

Faithful to the console ``docs/vspc-api.md`` describes, failure modes included: the tests,
``vspc-etl demo`` and ``vspc-etl simulate`` run the extractor against it.

    from etl.simulator import Simulator, SimulatorServer

    sim = Simulator(jobs=50, seed=1)                # api key "sim-api-key", admin/sim-password
    with SimulatorServer(sim, port=0) as server:    # serves on a background thread
        server.url                                  # "http://127.0.0.1:PORT" (VSPC_URL)
        sim.advance(24)                             # a virtual day passes: jobs run, come, go
        sim.faults.add("429", after=1, retry_after=1)

Layout: ``data`` (the World: deterministic records and the virtual clock), ``agents``
(computers: backup and management agents, outages), ``points`` (restore points), ``clock``
(schedules), ``query`` (paging, filter, sort, select), ``faults`` (what goes wrong, and when),
``app`` (the console as a function of the request), ``server`` (HTTP), ``cli`` (the
``simulate`` command).

API served under ``/api/v3`` (``Authorization: Bearer <api key or access token>`` on GETs);
every GET below is a collection with limit, offset, filter, sort, select and the same faults:

    GET  /infrastructure/backupAgents/windows/jobs    Windows agent jobs
    GET  /infrastructure/backupAgents/linux/jobs      Linux agent jobs (no scheduleEvents,
    GET  /infrastructure/backupAgents/mac/jobs        Mac agent jobs    detailed targetType)
    GET  /infrastructure/backupAgents                 every agent, with its computer name
    GET  /infrastructure/backupAgents/windows         instanceUid, managementAgentUid,
                                                      cbtDriverStatus (no name, as the vendor)
    GET  /infrastructure/backupAgents/linux, /mac     instanceUid, managementAgentUid
    GET  /infrastructure/managementAgents             one per computer, and a few lone ones
    GET  /protectedWorkloads/computersManagedByConsole/restorePoints
                                                      retained restore points
    GET  /organizations                               organizations
    POST /token                                       password and refresh_token grants
    GET  /asyncActions/{id}, /asyncActions/{id}/result

Which platforms exist is a choice (``Simulator(platforms=("windows",))``; all three by
default); the endpoints of the others answer with empty collections.

Control endpoints, for a simulator running in another process (no auth, JSON answers):

    POST /_sim/advance?hours=24   let virtual time pass; answers {now, changed, added, deleted}
    POST /_sim/faults             body {"kind": "429", "after": 0, "times": 1, "path": "jobs",
                                  ...params} adds a rule (``times`` null: forever);
                                  {"clear": true} removes all faults;
                                  {"random": {"rate": 0.1, "kinds": [...], "seed": 1}}
    POST /_sim/touch?fraction=0.1 edit that share of the jobs (benchmarks); answers {changed}
    GET  /_sim/jobs?platform=windows   the truth: {now, data: [job, ...]} in creation order
    GET  /_sim/stats              {now, requests: {endpoint: n}, faults: {kind: n}}
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from etl.simulator.app import Request, Response, Simulator, Stats
    from etl.simulator.data import AdvanceSummary
    from etl.simulator.faults import Fault, FaultPlan
    from etl.simulator.server import SimulatorServer
    from etl.simulator.wire import ABSENT

# Imported on first use: ``vspc-etl`` registers the ``simulate`` command at every start, and a
# sync has no use for the simulated console's modules.
_HOMES = {
    "ABSENT": "wire",
    "AdvanceSummary": "data",
    "Fault": "faults",
    "FaultPlan": "faults",
    "Request": "app",
    "Response": "app",
    "Simulator": "app",
    "SimulatorServer": "server",
    "Stats": "app",
}

__all__ = [
    "ABSENT",
    "AdvanceSummary",
    "Fault",
    "FaultPlan",
    "Request",
    "Response",
    "Simulator",
    "SimulatorServer",
    "Stats",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
