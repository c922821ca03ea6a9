"""The one door to Temporal: everything windflow's clients (API, CLI, activities) need to reach a workflow.

- :mod:`~windflow.temporal.names`: workflow ids, workflow type names, signal / update / query names and the
  activity names called by string, as constants and builders (no such literal anywhere else in ``src/``;
  ``tests/test_temporal_names.py`` greps for them);
- :mod:`~windflow.temporal.search_attributes`: the custom search attributes (what makes runs findable in the UI);
- :mod:`~windflow.temporal.client`: the client factory (data converter, codec, TLS, interceptors);
- :mod:`~windflow.temporal.handles`: typed starts and messages (``start_initialization``, ``start_recovery``, …);
- :mod:`~windflow.temporal.live`: read a run live from its workflow, else from its stored record;
- :mod:`~windflow.temporal.links`: links into the Temporal Web UI.

Workflows import ``names`` and ``search_attributes`` (inside their pass-through block), so this package's
``__init__`` imports nothing: importing a name constant must not load the client, the codec or the settings.
"""
