"""Docker mode: a task runs in a container (issue 5).

``args`` is pure (image choice, container name, extra arguments, masking,
the container spec); ``run`` is the runner process the worker launches
(``python -m fleet.worker.docker.run``); ``cleanup`` removes containers left
behind by a crashed worker or runner, found by their labels.
"""
