"""Metrics and accounting: sampling in the manager, samples in SQLite with
roll-ups and retention, the usage report, and the Prometheus exposition.

- :mod:`fleet.metrics.sampler`: one thread in the manager samples the host,
  the GPUs (through :mod:`fleet.core.nvml`) and every running task's processes.
- :mod:`fleet.metrics.storage`: the sample tables (schema version 3), their
  roll-ups and retention, time-series queries, and the read-only history the
  report is computed from.
- :mod:`fleet.metrics.report`: GPU-hours and task figures, pure functions of
  a :class:`~fleet.metrics.report.History`.
- :mod:`fleet.metrics.prometheus`: the ``/metrics`` text.
"""
