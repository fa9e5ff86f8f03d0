"""The service layer: the only code that changes shared state.

Each operation validates its input once, commits in the store, then wakes
whoever must act (:mod:`fleet.service.wake`), in that order and in one
place.  Operations take and return typed records (:mod:`fleet.core.models` and
the frozen dataclasses here), never wire dicts: the REST routes, the
ClearML-compatible routes and the remote executor routes (``fleet/api/``)
translate HTTP to these calls and their answers to JSON
(``fleet/api/serialize.py``); ``fleetctl execute`` calls the same task
operations on a store it opens itself.

- :mod:`fleet.service.tasks`: submit, enqueue, dequeue, abort, clone, start
  outside a queue, record an attempt's end; the task reads the API answers.
- :mod:`fleet.service.arrays`: many tasks in one call (a sweep), an array's
  counts and abort.
- :mod:`fleet.service.remote`: a remote executor's start, log and finish.
- :mod:`fleet.service.queues`: create, tag, delete queues.
- :mod:`fleet.service.workers`: add (``up``), find, stop workers; set and
  clear runtime properties (``force``).
- :mod:`fleet.service.gpus`: drain and undrain GPUs.
- :mod:`fleet.service.operations`: the bundle the manager builds and the API uses.
"""
