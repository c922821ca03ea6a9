"""Links into the Temporal Web UI: the one builder (API answers, the CLI, the dashboard's config)."""

from __future__ import annotations

from urllib.parse import quote

from windflow.settings import Settings


def _namespace_url(settings: Settings) -> str | None:
    base = settings.temporal_ui_base_url
    if not base:
        return None
    return f"{base}/namespaces/{quote(settings.temporal_namespace, safe='')}"


def workflow_link(settings: Settings, workflow_id: str | None = None, run_id: str | None = None) -> str | None:
    """The Temporal Web UI page of a workflow (its latest run, or ``run_id``'s history), or the namespace's
    workflow list without an id; ``None`` when there is no UI."""
    namespace = _namespace_url(settings)
    if namespace is None:
        return None
    url = f"{namespace}/workflows"
    if workflow_id is None:
        return url
    url += f"/{quote(workflow_id, safe='')}"
    if run_id:
        url += f"/{quote(run_id, safe='')}/history"
    return url


def schedule_link(settings: Settings, schedule_id: str) -> str | None:
    """The Temporal Web UI page of a schedule; ``None`` when there is no UI."""
    namespace = _namespace_url(settings)
    return None if namespace is None else f"{namespace}/schedules/{quote(schedule_id, safe='')}"
