"""Task logs live in :mod:`fleet.tasklog` (the worker, ``fleetctl execute``
and the manager's remote executor API all write them); these names stay
importable from here for the worker's modules until the layout move."""

from fleet.tasklog import LOG_FAILED as LOG_FAILED
from fleet.tasklog import MAX_PARTIAL as MAX_PARTIAL
from fleet.tasklog import MIN_ROOM as MIN_ROOM
from fleet.tasklog import TaskLog as TaskLog
from fleet.tasklog import no_room as no_room
from fleet.tasklog import stamp as stamp
from fleet.tasklog import strip_stamp as strip_stamp
