"""Activities that talk to Temporal itself (waiting on another run)."""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from windflow.domain.contracts import AwaitWorkflowInput, AwaitWorkflowResult


class TemporalActivities:
    def __init__(self, *, client: Client) -> None:
        self.client = client

    @activity.defn(name="await_workflow")
    async def await_workflow(self, req: AwaitWorkflowInput) -> AwaitWorkflowResult:
        """Return once ``workflow_id`` has closed (any outcome); heartbeat while waiting."""
        handle = self.client.get_workflow_handle(req.workflow_id)
        while True:
            try:
                desc = await handle.describe()
            except RPCError as exc:
                if exc.status == RPCStatusCode.NOT_FOUND:
                    return AwaitWorkflowResult(workflow_id=req.workflow_id, status="not_found")
                raise
            if desc.status not in (None, WorkflowExecutionStatus.RUNNING):
                return AwaitWorkflowResult(workflow_id=req.workflow_id, status=desc.status.name.lower())
            activity.heartbeat(desc.status.name if desc.status else "unknown")
            await asyncio.sleep(req.poll)
