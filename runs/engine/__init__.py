"""The Trellis engine.

Lifecycle of a run:
  1. `run_start` (runs.services) creates the run `pending` and, in the same transaction
     holding the workflow row, admits it (`admission.admit`): `running` when a slot is
     free under `max_active_runs` and the global cap, else `queued` (or skipped/cancelling
     others, per `overlap`). Admission creates the step rows and queues the root steps.
  2. Queued steps go to django-q2 (`dispatch.enqueue_steps`, after commit), unless
     tasks already wait there (`dispatch.tasks_waiting`): then the first worker free
     takes them (step 3). A worker
     claims one with a compare-and-set (`transitions.step_claim`), runs it
     (`executors`), renewing a lease while it runs, then finishes it
     (`transitions.step_finish`) with the run row locked: that is where fan-in is
     decided, so a join step is queued exactly once.
  3. In that same transaction the worker claims the next ready (or queued) step of the
     run and runs it itself: no broker hop per step. The other ready steps go to the
     broker (at most TRELLIS_FANOUT_TASKS tasks; each keeps claiming until none is left,
     then takes the queued steps of other runs).
  4. When no step is open any more the run gets its terminal status. If runs of its
     workflow wait for the slot it freed, the worker starts the oldest and runs it
     (`transitions.admit_waiting_claiming`, PostgreSQL; on SQLite an admission task).
  5. The ticker (`ticker.tick`, in every `trellis worker`) enqueues due retries and
     queued steps no task has taken yet, reaps
     expired leases (retry or `worker_lost`), times out runs and approvals, admits
     queued and scheduled runs and fires cron schedules.
Every transition is a guarded UPDATE and writes its RunEvent rows in the same transaction.
"""
