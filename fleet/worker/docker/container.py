"""One container, run to its end: create, start, stream its output, stop on a signal, remove.

Used for a task's container and its environment's build container
(:mod:`fleet.worker.docker.run`) and for ``fleetctl build --docker``
(:mod:`fleet.worker.docker.image`).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import DeviceRequest

from fleet.core.errors import FleetError
from fleet.worker.docker.args import ContainerSpec
from fleet.worker.docker.scripts import say

log = logging.getLogger(__name__)

EXIT_FAILED = 1
NO_GPU_RUNTIME = (
    "docker mode: the task needs GPUs [{gpus}] but this docker engine has no NVIDIA runtime "
    "(install nvidia-container-toolkit), so no GPU can be given to the container: {detail}"
)


class DockerRunError(FleetError):
    """The container could not be created or started; the message is the task's reason."""


def device_requests(gpus: list[str]) -> list[DeviceRequest]:
    """Exactly the task's GPUs, by UUID where NVML gave them (none for a CPU task)."""
    if not gpus:
        return []
    return [DeviceRequest(device_ids=list(gpus), capabilities=[["gpu"]])]


class Stopper:
    """SIGTERM/SIGINT: stop the container (in a thread: the main thread is reading its logs)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.container: Any = None
        self.requested = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            return
        self.requested = True
        say(f"stop requested: stopping the container (SIGKILL after {self.timeout:g}s)")
        if self.container is not None:
            threading.Thread(target=self._stop, daemon=True).start()

    def _stop(self) -> None:
        try:
            self.container.stop(timeout=max(0, math.floor(self.timeout)))  # the engine takes whole seconds
        except DockerException as exc:
            log.warning("stopping the container failed (%s); killing it", exc)
            try:
                self.container.kill()
            except DockerException as again:
                log.warning("killing the container failed: %s", again)


def ensure_image(client: Any, image: str, force_pull: bool) -> None:
    """``docker_force_pull``: always pull; else pull only when the image is not here."""
    if not force_pull:
        try:
            client.images.get(image)
            return
        except ImageNotFound:
            pass
    say(f"pulling {image}" + (" (docker_force_pull)" if force_pull else " (not found locally)"))
    try:
        client.images.pull(image)
    except DockerException as exc:
        why = "docker_force_pull is set and " if force_pull else "it is not here and "
        raise DockerRunError(f"docker mode: image {image}: {why}the pull failed: {exc}") from None


def run_container(
    client: Any,
    spec: ContainerSpec,
    *,
    force_pull: bool = False,
    stop_timeout: float = 5.0,
    write: Callable[[str], None] | None = None,
    stopper: Stopper | None = None,
    before_start: Callable[[Any], None] | None = None,
    after_exit: Callable[[Any, int], None] | None = None,
) -> int:
    """Create, start, stream and remove the container; return its exit code.

    ``before_start(container)`` runs between creation and start (files copied
    in), ``after_exit(container, exit_code)`` before the removal (a commit)."""
    write = write or (lambda text: print(text, flush=True))
    stopper = stopper or Stopper(stop_timeout)
    ensure_image(client, spec.image, force_pull)
    kwargs = spec.kwargs()
    kwargs.pop("detach")
    requests = device_requests(spec.gpus)
    if requests:
        kwargs["device_requests"] = requests
    if stopper.requested:  # stopped while the code or the image was being fetched
        raise DockerRunError("docker mode: stopped before the container was created")
    try:
        container = client.containers.create(**kwargs)
    except APIError as exc:
        raise DockerRunError(f"docker mode: cannot create the container: {exc.explanation or exc}") from None
    stopper.container = container
    try:
        if before_start is not None:
            before_start(container)
        try:
            container.start()
        except APIError as exc:
            detail = str(exc.explanation or exc)
            if spec.gpus and ("device driver" in detail or "nvidia" in detail.lower()):
                raise DockerRunError(NO_GPU_RUNTIME.format(gpus=",".join(spec.gpus), detail=detail)) from None
            raise DockerRunError(f"docker mode: cannot start the container: {detail}") from None
        if stopper.requested:
            stopper._stop()
        pending = b""
        for chunk in container.logs(stream=True, follow=True):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                write(line.decode("utf-8", "replace"))
        code = int(container.wait().get("StatusCode", EXIT_FAILED))
        # The followed stream can end before a last line without a newline reaches it: ask for it.
        last = container.logs(stream=False, tail=1)
        if isinstance(last, bytes) and last and not last.endswith(b"\n") and last.startswith(pending):
            pending = last
        if pending:
            write(pending.decode("utf-8", "replace"))
        if stopper.requested:
            say(f"container stopped (exit code {code})")
        if after_exit is not None:
            after_exit(container, code)
        return code
    finally:
        try:
            container.remove(force=True)
        except NotFound:
            pass
        except DockerException as exc:
            log.warning("could not remove container %s: %s", spec.name, exc)
