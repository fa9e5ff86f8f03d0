"""Every bound the API puts on what it is sent and what it answers, in one place.

Each number a route takes (in a body or a query) has its range here, as an
``Annotated`` type that the request models (:mod:`fleet.api.schemas`, the
ClearML-compatible bodies) and the query parameters use, so the REST route and
the ClearML route for one thing check the same range.  Sizes that are not a
field's (the whole body, JSON nesting, a list answer) are here too.

The ranges are wide enough for anything real and narrow enough that every
value stays usable downstream: an expiry added to the clock is still a date
Python can print, an offset still fits SQLite's integers and ``seek``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from pydantic import Field

YEAR_S = 365 * 24 * 3600

# -- numbers ------------------------------------------------------------------
PRIORITY_MIN, PRIORITY_MAX = -1_000_000, 1_000_000
TIMEOUT_MAX_S = YEAR_S  # a task's timeout
RETRIES_MAX = 1000
GPUS_MAX = 1024  # GPUs a task asks for; GPU indexes are below this
EXPIRY_MAX_S = 10 * YEAR_S  # a runtime property's lifetime
SERVICES_MAX = 100_000
ATTEMPT_MAX = 1_000_000
EXIT_CODE_MIN, EXIT_CODE_MAX = -255, 255
LIST_LIMIT_MAX = 10_000  # rows in one list answer
MAX_OFFSET = 2**53  # byte offsets into logs, row offsets into lists (SQLite's integers, ``seek``)
METRICS_STEP_MAX_S = 31 * 86400

Priority = Annotated[int, Field(ge=PRIORITY_MIN, le=PRIORITY_MAX)]
TimeoutSeconds = Annotated[float, Field(gt=0, le=TIMEOUT_MAX_S, allow_inf_nan=False)]
Retries = Annotated[int, Field(ge=0, le=RETRIES_MAX)]
GpuCount = Annotated[int, Field(ge=0, le=GPUS_MAX)]
GpuIndex = Annotated[int, Field(ge=0, lt=GPUS_MAX)]
ExpirySeconds = Annotated[float, Field(gt=0, le=EXPIRY_MAX_S, allow_inf_nan=False, description="seconds")]
# ClearML's ``workers.set_runtime_properties``: the same range, and 0 deletes the property.
ExpiryOrZero = Annotated[float, Field(ge=0, le=EXPIRY_MAX_S, allow_inf_nan=False, description="seconds; 0 deletes")]
ServicesMax = Annotated[int, Field(ge=1, le=SERVICES_MAX)]
Attempt = Annotated[int, Field(ge=1, le=ATTEMPT_MAX)]
ExitCode = Annotated[int, Field(ge=EXIT_CODE_MIN, le=EXIT_CODE_MAX)]

ListLimit = Annotated[int, Query(ge=1, le=LIST_LIMIT_MAX)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]
MetricsStep = Annotated[int | None, Query(ge=1, le=METRICS_STEP_MAX_S, description="seconds per point")]

# -- sizes --------------------------------------------------------------------
MAX_BODY_MB = 2.0  # default of ``fleet.api.max_body_mb``: larger request bodies get 413
MAX_JSON_DEPTH = 32  # nesting of arrays and objects in a request body
ENV_MAX_ENTRIES = 256
ENV_NAME_MAX = 256  # characters
ENV_VALUE_MAX = 64 * 1024  # characters
NAME_MAX = 256  # a task's name, its user
MAX_LIST_BYTES = 4 * 2**20  # a list answer stops adding rows past this (``truncated``)
