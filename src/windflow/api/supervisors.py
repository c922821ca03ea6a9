"""After a committed registry change: the watcher of each affected queue runs.

The watcher (``watch/{queue}``) reads the registry's change stamp and picks a change up by itself within a
second (a new or deleted service, a changed probe, a new desired state), so nothing needs telling; this only
makes sure the watcher of a queue that just got its first service exists. Best effort: the sweep reconciles.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from windflow.api.resources import Resources
from windflow.persistence.repositories import ServiceRepository
from windflow.temporal.watchers import ensure_watcher

log = logging.getLogger("windflow.api.supervisors")


async def ensure_watched(resources: Resources, service_ids: Sequence[str]) -> None:
    """Make sure the queues of ``service_ids`` (the shared one, and their hosts') have their watcher."""
    if not service_ids:
        return
    try:
        async with resources.db.read() as session:
            rows = await ServiceRepository().all(session=session)
        wanted = set(service_ids)
        hosts = {row.host or None for row in rows if row.id in wanted}
        client = await resources.temporal.get()
        for host in sorted(hosts, key=lambda h: h or ""):
            await ensure_watcher(client, task_queue=resources.settings.task_queue, host=host)
    except Exception as exc:  # Temporal down: the next sweep reconciles
        log.warning("could not make sure the watchers run: %s", exc)
