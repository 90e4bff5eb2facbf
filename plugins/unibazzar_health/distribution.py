"""How checks are spread over pytest-xdist workers: every check observed exactly once, and
every worker's share observed at once.

xdist's own load scheduler hands a worker a few tests at a time, and more as it finishes
them. Our checks do their I/O ahead of their assertions, but a worker that learns of a check
only when it is scheduled can start its probes only then: against a dead platform each wave
cost one more deadline (34.5 s with ``-n 2`` where one process took 3.4 s).

Here the whole selection is assigned up front, by one function both sides compute from the
same collection: the controller sends each worker its whole share at once, and each worker,
knowing its share as soon as its collection ends, starts all of that share's observations
together. Checks of one service go to one worker, so observations they share within a run
(``CheckContext.shared``) are made once. Plain logic here; the xdist scheduler class is built
in :func:`make_scheduler`, imported only when xdist runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from unibazzar_health.config.names import SERVICES

# workerinput key: set (True) when the controller uses our scheduler, so a worker may trust
# assign() to tell its share (with another --dist the share is not known in advance).
SHARE_KEY = "unibazzar_share_up_front"


def group_of(nodeid: str) -> str:
    """The service a check belongs to, read from its node id (``checks/auth_service/...``,
    ``auth_service/...`` when run from the installed package, or a per-service parameter
    ``[auth-service]``); the node id itself when none is named. Both xdist sides have only
    node ids in common, so the grouping must come from them."""
    for service in SERVICES:
        if f"[{service}]" in nodeid or f"/{service.replace('-', '_')}/" in f"/{nodeid}":
            return service
    return nodeid


def assign(nodeids: Sequence[str], workers: int) -> list[list[int]]:
    """Each worker's share of ``nodeids``, as indices in collection order.

    Groups (services) are placed largest first on the least-loaded worker, ties to the lower
    worker number: deterministic, so the controller and every worker agree."""
    workers = max(1, workers)
    groups: dict[str, list[int]] = {}
    for index, nodeid in enumerate(nodeids):
        groups.setdefault(group_of(nodeid), []).append(index)
    shares: list[list[int]] = [[] for _ in range(workers)]
    for _, indices in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        lightest = min(range(workers), key=lambda w: (len(shares[w]), w))
        shares[lightest].extend(indices)
    return [sorted(share) for share in shares]


def worker_number(worker_id: str) -> int | None:
    """``gw3`` -> 3; None for anything else (a renamed or replacement worker)."""
    digits = worker_id.removeprefix("gw")
    return int(digits) if digits.isdigit() else None


def share_of(nodeids: Sequence[str], worker_id: str, workers: int) -> list[int]:
    """The indices a worker will be sent by our scheduler; none for a worker outside the
    original numbering (a replacement after a crash starts its checks as they arrive)."""
    number = worker_number(worker_id)
    if number is None or number >= workers:
        return []
    return assign(nodeids, workers)[number]


def make_scheduler(config: Any, log: Any) -> Any:
    """xdist's LoadScheduling, but the first distribution sends every worker its whole
    share (see the module docstring); a crashed worker's items are re-sent by xdist as usual."""
    from xdist.scheduler import LoadScheduling

    class RunbookScheduling(LoadScheduling):  # type: ignore[misc]
        collection: list[str] | None

        def schedule(self) -> None:
            assert self.collection_is_completed
            if self.collection is not None:  # a worker added later (replacing a crashed one)
                for node in self.nodes:
                    self.check_schedule(node)
                return
            if not self._check_nodes_have_same_collection():
                self.log("**Different tests collected, aborting run**")
                return
            collection: list[str] = next(iter(self.node2collection.values()))
            self.collection = collection
            self.pending[:] = []
            nodes = self.nodes
            by_number = {worker_number(node.gateway.id): node for node in nodes}
            orphans: list[int] = []
            for number, share in enumerate(assign(collection, self.numnodes)):
                node = by_number.get(number)
                if node is None:
                    orphans.extend(share)
                elif share:
                    self.node2pending[node].extend(share)
                    node.send_runtest_some(share)
            for position, index in enumerate(sorted(orphans)):
                node = nodes[position % len(nodes)]
                self.node2pending[node].append(index)
                node.send_runtest_some([index])
            for node in nodes:
                node.shutdown()

    return RunbookScheduling(config, log)
