"""Python environments: one small interface (:mod:`.base`), one module per manager.

:func:`choose_builder` picks the implementation for a task: the configured
``package_manager.type``, poetry when the repository's requirements are a
poetry project, and uv -> pip when the configured one is not installed here.
"""

from __future__ import annotations

from fleet.worker.envs.builder import EnvBuilder, EnvBuildError, Log, Requirements
from fleet.worker.envs.conda import CondaBuilder
from fleet.worker.envs.pip import PipBuilder
from fleet.worker.envs.poetry import PoetryBuilder
from fleet.worker.envs.uv import UvBuilder

BUILDERS: dict[str, type[EnvBuilder]] = {
    "uv": UvBuilder,
    "pip": PipBuilder,
    "poetry": PoetryBuilder,
    "conda": CondaBuilder,
}


def choose_builder(configured: str, requirements: Requirements, log: Log) -> EnvBuilder:
    if requirements.project is not None:
        builder: EnvBuilder = PoetryBuilder()
        if not builder.available():
            raise EnvBuildError("the repository is a poetry project (poetry.lock) but poetry is not installed here")
        return builder
    builder = BUILDERS[configured]()
    if builder.available():
        return builder
    fallback: EnvBuilder = UvBuilder()
    if not fallback.available():
        fallback = PipBuilder()
    log.note(f"{configured} is not installed on this host; using {fallback.name}")
    return fallback


__all__ = ["BUILDERS", "EnvBuildError", "EnvBuilder", "Log", "Requirements", "choose_builder"]
