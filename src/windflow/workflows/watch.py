"""``Watcher`` (id ``watch/{queue}``): one small long-lived workflow per task queue.

It runs one heartbeating activity, ``watch_queue``, on its queue (the shared queue, or a host's queue
``{task_queue}.host.{name}``) that watches every service of that queue and starts ``recover/{service}`` when
observed differs from desired. The activity returns only after ``max_run``; the workflow then continues as new,
so its history stays a handful of events. In steady state the engine sees one heartbeat per watcher and no
workflow task at all. A worker that dies stops heartbeating: after ``heartbeat_timeout`` (a few seconds)
Temporal hands the watch to another poller of the queue, and a worker starting on the same host takes it over at
once (``worker.reclaim_abandoned_activities``).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from windflow.activities.watch import WatchActivities
    from windflow.domain.contracts import WatcherInput, WatchQueueInput, WatchQueueResult
    from windflow.temporal import names
    from windflow.temporal import search_attributes as sa

#: a watch that failed (a worker died, the store was away) is tried again soon, forever
WATCH_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200), backoff_coefficient=2.0, maximum_interval=timedelta(seconds=2)
)


@workflow.defn(name=names.WATCHER)
class Watcher:
    def __init__(self) -> None:
        self.last: WatchQueueResult | None = None

    @workflow.query(name=names.STATUS)
    def query_status(self) -> WatchQueueResult | None:
        return self.last

    @workflow.run
    async def run(self, input: WatcherInput) -> WatchQueueResult:
        workflow.upsert_search_attributes([sa.KIND.value_set("watcher"), sa.STATE.value_set("watching")])
        where = f"host {input.host}" if input.host else "the shared queue"
        try:
            self.last = await workflow.execute_activity_method(
                WatchActivities.watch_queue,
                WatchQueueInput(
                    queue=input.queue,
                    host=input.host,
                    workflow_task_queue=workflow.info().task_queue,
                    max_run=input.max_run,
                ),
                task_queue=input.queue,
                summary=f"watch every service of {where} ({input.queue})",
                start_to_close_timeout=timedelta(seconds=input.max_run + 3600),
                heartbeat_timeout=timedelta(seconds=input.heartbeat_timeout),
                retry_policy=WATCH_RETRY,
            )
        except ActivityError as exc:  # start-to-close passed (a watch that hung): start over
            workflow.logger.warning("watch of %s ended: %s", input.queue, exc)
        workflow.continue_as_new(input)
