"""Every recorded history under tests/histories replays on today's workflow code, and every workflow type the
worker registers has at least one recorded history.

A history is a run's recorded decisions; a workflow change that would decide differently on replay (a new
activity call without ``workflow.patched``, a reordered timer) breaks every run in flight when the worker is
upgraded. Record new histories when a workflow changes shape on purpose (``WINDFLOW_RECORD_HISTORIES=1`` with
the tests that write them: tests/test_workflows_fast.py, test_initialization.py, test_jobs.py, …), and keep the
old ones: they are the runs still in flight at the upgrade.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from windflow.temporal import names
from windflow.temporal.client import DATA_CONVERTER
from windflow.worker import WORKFLOWS

HISTORIES = Path(__file__).parent / "histories"


def _workflow_type(history: WorkflowHistory) -> str:
    return history.events[0].workflow_execution_started_event_attributes.workflow_type.name


def _histories() -> dict[str, WorkflowHistory]:
    return {
        path.stem: WorkflowHistory.from_json(path.stem, path.read_text()) for path in sorted(HISTORIES.glob("*.json"))
    }


#: workflow types the worker runs (each class is registered under its own name: windflow.temporal.names)
REGISTERED = {t.__name__ for t in WORKFLOWS}


@pytest.mark.asyncio(loop_scope="session")
async def test_every_recorded_history_replays():
    replayer = Replayer(workflows=WORKFLOWS, data_converter=DATA_CONVERTER)
    replayed = []
    for name, history in _histories().items():
        if _workflow_type(history) not in REGISTERED:
            continue  # a workflow type no worker runs any more: nothing of it can be in flight
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, f"{name}: {result.replay_failure}"
        replayed.append(name)
    assert replayed


def test_every_registered_workflow_type_has_a_recorded_history():
    recorded = {_workflow_type(history) for history in _histories().values()}
    spelled = {value for key, value in vars(names).items() if key.isupper() and isinstance(value, str)}
    assert spelled >= REGISTERED, "each workflow class is registered under its name"
    assert REGISTERED - recorded == set(), "record a history of each (see this module's docstring)"
