"""SQLAlchemy 2.0 async store: models, repositories (never commit), engine set-up and Alembic migrations.

Which way to the store
======================

:class:`~windflow.persistence.db.Database` has five access paths. Each exists because a measured hot path
needed it; pick by what the code does, top to bottom, and take the first that fits:

============================  =====================================================================
path                          use it for
============================  =====================================================================
``rows(stmt)``                one short ``SELECT`` (a point lookup, an exists check, an aggregate) on
                              every request: the token denylist, the read cache's change stamp. No
                              session; on SQLite it runs on the event loop's thread, ~10 thread
                              hand-offs cheaper than a session. Never for more than a few rows.
``read()``                    every other read: a session (plain ``BEGIN``) whose reads see one
                              snapshot. Routes get it as ``ReadSessionDep``.
``write_sync(work)``          a small write on a request's path that only touches the session
                              synchronously (an audit record and its outbox event:
                              ``api.audit.record_now``). On SQLite a few hundred µs on the loop's
                              thread instead of several ms through aiosqlite. ``work`` may run twice.
``write_batched(work)``       writes that come in bursts from many tasks at once (activities
                              recording state, probe results): gathered into one transaction on
                              SQLite (group commit). ``work`` must be safe to re-run after a rollback.
``write()``                   any other unit of work: a session in ``BEGIN IMMEDIATE`` on SQLite,
                              committed on success, rolled back on error. Routes get it as
                              ``WriteSessionDep`` (committed before the response is sent).
============================  =====================================================================

Why the rules below matter: SQLite admits **one writer at a time**. Every write path holds this process's
writer slot (and SQLite's write lock) from its ``BEGIN`` to its ``COMMIT``, and every other writer of the
process (API routes, the worker's activities, the outbox relay) queues behind it.

- **No network call inside a write.** Never await Temporal, HTTP, Redis or a probe while a write
  transaction is open: a slow or unreachable peer would hold the slot and stall every writer. Ask first
  (no transaction, or a short ``read()``), then write briefly; if the network call must come after the
  write (start a workflow for a stored run), write, call, and on failure undo in a second short write
  (``POST /initializations``, ``/shutdowns``, ``/rollouts`` do; ``tests/test_writer_slot.py`` checks).
  A write dependency (``WriteSessionDep``) is therefore only for routes that touch nothing but the store.
- **No write inside a write of the same task**: it would wait for itself (``_acquire_writer`` raises).
- **Short reads over long ones**: a ``read()`` held across a network call keeps a pooled connection (and,
  on SQLite, a snapshot that delays WAL checkpoints); read, leave the block, then call.

On PostgreSQL writers run concurrently, so ``write_sync`` and ``write_batched`` are plain ``write()``
transactions and ``rows`` is one statement on a pooled connection; the rules above still hold (a
transaction left open across a network call keeps locks and a connection).

Repositories take a keyword-only ``session`` and never commit: the caller's block is the unit of work.
"""
