"""A real docker engine and a small Python image for the docker tests.

No registry can be reached, so the test image is built here: ``docker import``
of a small root filesystem assembled from this host (its ``python3.11``, the
shared libraries ``ldd`` lists, the standard library, the pip and setuptools
wheels ``ensurepip`` installs from, and ``dash`` as ``/bin/sh``), then
``docker build FROM`` it.  So ``python3 -m venv`` works in it and pip can
install local wheels, with no network.  Every user skips, with the reason,
when no engine answers (tests/run.sh starts one in CI).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

BASE = "fleet-test-base:3"
IMAGE = "fleet-test-python:3"
EXTRA_IMAGE = "fleet-test-python-extra:3"  # IMAGE plus uv and a package installed system-wide
PYTHON = "/usr/bin/python3.11"
WHEELS = "/usr/share/python-wheels"  # Debian's ensurepip takes pip from here


def connect() -> Any:
    client = None
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as exc:  # any failure to reach the engine means: skip
        if client is not None:
            client.close()
        pytest.skip(f"no docker engine reachable ({exc}); tests/run.sh starts dockerd")
    return client


def _libraries(binary: str) -> list[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    return re.findall(r"(/\S+\.so[.\d]*)", out)


def _rootfs_tar() -> bytes:
    """A root filesystem with python3.11, its libraries, its stdlib, pip's wheels and /bin/sh."""
    buf = io.BytesIO()
    skip = {"test", "idlelib", "tkinter", "turtledemo", "site-packages", "dist-packages", "__pycache__"}

    def no_tests(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if any(part in skip for part in Path(info.name).parts) else info

    shell = shutil.which("dash") or "/bin/sh"
    with tarfile.open(fileobj=buf, mode="w", dereference=True) as tar:
        files = {PYTHON: PYTHON, shell: "/bin/sh"}
        for lib in {*_libraries(PYTHON), *_libraries(shell)}:
            files[lib] = lib
        # every folder above them, 0755 as in any image (left implicit, they come out 0600, and
        # a container run as another user than root cannot start: tests/worker/test_runas.py)
        above = {p for dest in [*files.values(), "/usr/lib/python3.11", WHEELS] for p in Path(dest).parents}
        for folder in sorted(str(p).lstrip("/") for p in above if str(p) != "/"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for src, dest in files.items():
            tar.add(os.path.realpath(src), arcname=dest.lstrip("/"))
        tar.add("/usr/lib/python3.11", arcname="usr/lib/python3.11", filter=no_tests)
        if os.path.isdir(WHEELS):
            tar.add(WHEELS, arcname=WHEELS.lstrip("/"))
        for name, target in (("usr/bin/python3", "python3.11"), ("usr/bin/sh", "../../bin/sh")):
            link = tarfile.TarInfo(name)
            link.type, link.linkname = tarfile.SYMTYPE, target
            tar.addfile(link)
        for folder in ("tmp", "root", "etc"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if folder == "tmp" else 0o755
            tar.addfile(info)
    return buf.getvalue()


def ensure_image(client: Any) -> str:
    """:data:`IMAGE`, assembled and built on ``client``'s engine when missing (also used by bench)."""
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        try:
            client.images.get(BASE)
        except docker.errors.ImageNotFound:
            repo, tag = BASE.split(":")
            client.api.import_image_from_data(_rootfs_tar(), repository=repo, tag=tag)
        dockerfile = f"FROM {BASE}\nENV FLEET_TEST_IMAGE=1\nWORKDIR /root\n"
        client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=IMAGE, network_mode="none", rm=True)
    return IMAGE


def python_image() -> Iterator[Any]:
    """For a module-scoped fixture: a client whose engine has :data:`IMAGE`."""
    client = connect()
    if not os.path.exists(PYTHON):
        pytest.skip(f"{PYTHON} is needed to assemble the test image")
    ensure_image(client)
    yield client
    client.close()


def extra_image(client: Any, uv: str) -> str:
    """:data:`EXTRA_IMAGE`: :data:`IMAGE` with ``uv`` (the host's binary and the
    libraries it links) and a system-wide package ``tinysys`` 1.0 (in
    ``/usr/local/lib/python3.11/dist-packages``, where the image's Python looks)."""
    try:
        client.images.get(EXTRA_IMAGE)
        return EXTRA_IMAGE
    except docker.errors.ImageNotFound:
        pass
    ensure_image(client)
    site = "usr/local/lib/python3.11/dist-packages"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", dereference=True) as tar:
        tar.add(os.path.realpath(uv), arcname="root/usr/local/bin/uv")
        for lib in _libraries(uv):
            tar.add(os.path.realpath(lib), arcname="root" + lib)
        files = {
            f"root/{site}/tinysys.py": b"WHO = 'tinysys from the image'\n",
            f"root/{site}/tinysys-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinysys\nVersion: 1.0\n",
            "Dockerfile": f"FROM {IMAGE}\nCOPY root/ /\n".encode(),
        }
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    client.images.build(fileobj=buf, custom_context=True, tag=EXTRA_IMAGE, network_mode="none", rm=True)
    return EXTRA_IMAGE


def make_wheel(folder: Path, name: str, version: str, module_text: str) -> Path:
    """A pure-Python wheel with one module, ``name``; pip installs it with no index."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": module_text,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: fleet-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel
