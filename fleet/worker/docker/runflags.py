"""``docker run`` options as docker SDK keyword arguments: one table, one parser.

Every option of ``docker run`` that ``client.containers.create`` can express
is translated (:data:`VALUE_FLAGS`, :data:`BOOL_FLAGS`); options only the
docker CLI itself understands (:data:`CLI_ONLY`) are refused naming them, as
is anything unknown, because an option silently dropped changes what the
task can do.  ``-v``, ``-e``, ``--env-file``, ``--label`` and ``--label-file``
feed fleet's own volume, environment and label maps (the caller merges them
with its own); everything else lands in :attr:`Parsed.options`.

Decisions:

* ``-w``, ``--name`` and ``--entrypoint`` given by the task or the agent win
  over fleet's defaults (the task's folder, ``docker_container_name_format``,
  the image's entry point); the entry point then receives fleet's command
  (``sh /fleet/run/entry.sh run CMD...``) as its arguments, as Docker does.
* ``--rm``, ``-d``/``--detach`` and ``--init`` are what fleet does anyway.
* ``--gpus`` becomes a ``DeviceRequest``; the GPUs fleet gives a task replace
  it, so it only matters for a task that got none (a CPU worker's).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docker.types import DeviceRequest, LogConfig, Mount, Ulimit

from fleet.core.errors import UsageError


class DockerArgsError(UsageError):
    """A docker argument, image or name format docker mode cannot use."""


@dataclass
class Parsed:
    volumes: dict[str, dict[str, str]] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)  # further create() keyword arguments
    shown: list[str] = field(default_factory=list)  # those options as docker run arguments, for the log


def _bad(flag: str, value: str, expected: str) -> DockerArgsError:
    return DockerArgsError(f"docker argument {flag} {value!r}: expected {expected}", field="docker_args")


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([bkmgt]?)b?", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)")
_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}


def _size(flag: str, value: str) -> int:
    match = _SIZE.fullmatch(value.strip())
    if not match:
        raise _bad(flag, value, "a size such as 512m or 2g")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _int(flag: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise _bad(flag, value, "an integer") from None


def _duration(flag: str, value: str) -> int:
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise _bad(flag, value, "a duration such as 30s or 1m30s")
    return int(sum(float(n) * _NS[u] for n, u in parts))


def _pair(flag: str, value: str, sep: str = "=") -> tuple[str, str]:
    key, found, val = value.partition(sep)
    if not key or not found:
        raise _bad(flag, value, f"KEY{sep}VALUE")
    return key, val


def _ulimit(flag: str, value: str) -> Ulimit:
    name, limits = _pair(flag, value)
    soft, _, hard = limits.partition(":")
    return Ulimit(name=name, soft=_int(flag, soft), hard=_int(flag, hard or soft))


def _gpus(flag: str, value: str) -> DeviceRequest:
    text = value.strip().strip('"')
    if text == "all":
        return DeviceRequest(count=-1, capabilities=[["gpu"]])
    if text.isdigit():
        return DeviceRequest(count=int(text), capabilities=[["gpu"]])
    if text.startswith("device="):
        return DeviceRequest(device_ids=text[len("device=") :].split(","), capabilities=[["gpu"]])
    raise _bad(flag, value, "all, a count, or device=ID[,ID...]")


def _publish(flag: str, value: str, ports: dict[str, Any]) -> None:
    spec, _, proto = value.partition("/")
    parts = spec.split(":")
    if not 1 <= len(parts) <= 3 or not parts[-1].isdigit():
        raise _bad(flag, value, "[IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]")
    key = f"{parts[-1]}/{proto or 'tcp'}"
    host: Any = None
    if len(parts) == 2:
        host = _int(flag, parts[0]) if parts[0] else None
    elif len(parts) == 3:
        host = (parts[0], _int(flag, parts[1])) if parts[1] else (parts[0],)
    ports[key] = host


def _mount(flag: str, value: str) -> Mount:
    fields: dict[str, str] = {}
    for item in value.split(","):
        key, _, val = item.partition("=")
        fields[key.strip()] = val.strip() or "true"
    target = fields.get("target") or fields.get("destination") or fields.get("dst")
    if not target:
        raise _bad(flag, value, "type=...,source=...,target=...")
    read_only = fields.get("readonly", fields.get("ro", "false")).lower() in ("true", "1")
    kind = fields.get("type", "volume")
    if kind not in ("bind", "volume", "tmpfs", "npipe"):
        raise _bad(flag, value, "type=bind, volume, tmpfs or npipe")
    return Mount(
        target=target,
        source=fields.get("source") or fields.get("src"),
        type=kind,  # type: ignore[arg-type]
        read_only=read_only,
    )


def _rate(flag: str, value: str, size: bool) -> dict[str, Any]:
    path, rate = _pair(flag, value, ":")
    return {"Path": path, "Rate": _size(flag, rate) if size else _int(flag, rate)}


def _weight(flag: str, value: str) -> dict[str, Any]:
    path, weight = _pair(flag, value, ":")
    return {"Path": path, "Weight": _int(flag, weight)}


def _env_file(flag: str, value: str, environ: Mapping[str, str] | None) -> dict[str, str]:
    try:
        text = Path(value).expanduser().read_text()
    except OSError as exc:
        raise _bad(flag, value, f"a readable file ({exc.strerror})") from None
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, eq, val = line.partition("=")
        if eq:
            out[key] = val
        elif environ is not None and key in environ:
            out[key] = environ[key]
    return out


# value flag -> (SDK keyword, how the value becomes the keyword's value, repeated values collect)
Convert = Callable[[str, str], Any]
VALUE_FLAGS: dict[str, tuple[str, Convert, str]] = {
    "--ipc": ("ipc_mode", lambda f, v: v, "one"),
    "--shm-size": ("shm_size", lambda f, v: v, "one"),
    "--network": ("network_mode", lambda f, v: v, "one"),
    "--user": ("user", lambda f, v: v, "one"),
    "--device": ("devices", lambda f, v: v, "list"),
    "--cap-add": ("cap_add", lambda f, v: v, "list"),
    "--cap-drop": ("cap_drop", lambda f, v: v, "list"),
    "--gpus": ("device_requests", _gpus, "list"),
    "--ulimit": ("ulimits", _ulimit, "list"),
    "--tmpfs": ("tmpfs", lambda f, v: tuple(v.split(":", 1)) if ":" in v else (v, ""), "map"),
    "--workdir": ("working_dir", lambda f, v: v, "one"),
    "--entrypoint": ("entrypoint", lambda f, v: [v] if v else [""], "one"),
    "--add-host": ("extra_hosts", lambda f, v: _pair(f, v, ":"), "map"),
    "--cpus": ("nano_cpus", lambda f, v: int(float(v) * 1e9) if re.fullmatch(r"\d+(\.\d+)?", v) else _int(f, v), "one"),
    "--memory": ("mem_limit", _size, "one"),
    "--memory-swap": ("memswap_limit", lambda f, v: -1 if v == "-1" else _size(f, v), "one"),
    "--memory-reservation": ("mem_reservation", _size, "one"),
    "--memory-swappiness": ("mem_swappiness", _int, "one"),
    "--kernel-memory": ("kernel_memory", _size, "one"),
    "--oom-score-adj": ("oom_score_adj", _int, "one"),
    "--pids-limit": ("pids_limit", _int, "one"),
    "--security-opt": ("security_opt", lambda f, v: v, "list"),
    "--runtime": ("runtime", lambda f, v: v, "one"),
    "--hostname": ("hostname", lambda f, v: v, "one"),
    "--domainname": ("domainname", lambda f, v: v, "one"),
    "--mac-address": ("mac_address", lambda f, v: v, "one"),
    "--group-add": ("group_add", lambda f, v: v, "list"),
    "--cpu-shares": ("cpu_shares", _int, "one"),
    "--cpu-period": ("cpu_period", _int, "one"),
    "--cpu-quota": ("cpu_quota", _int, "one"),
    "--cpu-rt-period": ("cpu_rt_period", _int, "one"),
    "--cpu-rt-runtime": ("cpu_rt_runtime", _int, "one"),
    "--cpu-count": ("cpu_count", _int, "one"),
    "--cpu-percent": ("cpu_percent", _int, "one"),
    "--cpuset-cpus": ("cpuset_cpus", lambda f, v: v, "one"),
    "--cpuset-mems": ("cpuset_mems", lambda f, v: v, "one"),
    "--blkio-weight": ("blkio_weight", _int, "one"),
    "--blkio-weight-device": ("blkio_weight_device", lambda f, v: _weight(f, v), "list"),
    "--device-read-bps": ("device_read_bps", lambda f, v: _rate(f, v, True), "list"),
    "--device-write-bps": ("device_write_bps", lambda f, v: _rate(f, v, True), "list"),
    "--device-read-iops": ("device_read_iops", lambda f, v: _rate(f, v, False), "list"),
    "--device-write-iops": ("device_write_iops", lambda f, v: _rate(f, v, False), "list"),
    "--device-cgroup-rule": ("device_cgroup_rules", lambda f, v: v, "list"),
    "--dns": ("dns", lambda f, v: v, "list"),
    "--dns-search": ("dns_search", lambda f, v: v, "list"),
    "--dns-option": ("dns_opt", lambda f, v: v, "list"),
    "--pid": ("pid_mode", lambda f, v: v, "one"),
    "--uts": ("uts_mode", lambda f, v: v, "one"),
    "--userns": ("userns_mode", lambda f, v: v, "one"),
    "--cgroupns": ("cgroupns", lambda f, v: v, "one"),
    "--cgroup-parent": ("cgroup_parent", lambda f, v: v, "one"),
    "--isolation": ("isolation", lambda f, v: v, "one"),
    "--platform": ("platform", lambda f, v: v, "one"),
    "--stop-signal": ("stop_signal", lambda f, v: v, "one"),
    "--sysctl": ("sysctls", lambda f, v: _pair(f, v), "map"),
    "--storage-opt": ("storage_opt", lambda f, v: _pair(f, v), "map"),
    "--volumes-from": ("volumes_from", lambda f, v: v, "list"),
    "--link": ("links", lambda f, v: tuple(v.split(":", 1)) if ":" in v else (v, v), "map"),
    "--volume-driver": ("volume_driver", lambda f, v: v, "one"),
    "--mount": ("mounts", _mount, "list"),
    "--name": ("name", lambda f, v: v, "one"),
    "--log-driver": ("log_driver", lambda f, v: v, "one"),  # combined with --log-opt below
    "--log-opt": ("log_opt", lambda f, v: _pair(f, v), "map"),
    "--restart": ("restart_policy", lambda f, v: _restart(f, v), "one"),
    "--health-cmd": ("health_test", lambda f, v: ["CMD-SHELL", v], "one"),
    "--health-interval": ("health_interval", _duration, "one"),
    "--health-timeout": ("health_timeout", _duration, "one"),
    "--health-start-period": ("health_start_period", _duration, "one"),
    "--health-retries": ("health_retries", _int, "one"),
}
BOOL_FLAGS: dict[str, str | None] = {
    "--privileged": "privileged",
    "--read-only": "read_only",
    "--oom-kill-disable": "oom_kill_disable",
    "--publish-all": "publish_all_ports",
    "--tty": "tty",
    "--interactive": "stdin_open",
    "--no-healthcheck": "no_healthcheck",
    "--rm": None,  # fleet removes every container it ran
    "--detach": None,  # fleet's containers always run detached
    "--init": None,  # fleet always runs Docker's init
}
# Fleet's own maps, and the flags handled with them.
OWN_FLAGS = {"--volume", "--env", "--env-file", "--label", "--label-file", "--publish", "--expose"}
ALIASES = {
    "-v": "--volume",
    "-e": "--env",
    "-l": "--label",
    "-w": "--workdir",
    "-u": "--user",
    "-h": "--hostname",
    "-m": "--memory",
    "-c": "--cpu-shares",
    "-p": "--publish",
    "-P": "--publish-all",
    "-t": "--tty",
    "-i": "--interactive",
    "-d": "--detach",
    "--net": "--network",
    "--dns-opt": "--dns-option",
}
CLI_ONLY = {
    "--cidfile": "the docker CLI writes it",
    "--detach-keys": "there is no terminal to detach from",
    "--sig-proxy": "fleet stops containers itself",
    "--disable-content-trust": "image trust is checked by the docker CLI",
    "--pull": "use agent.docker_force_pull",
    "--quiet": "the docker CLI's output",
    "-q": "the docker CLI's output",
    "--attach": "fleet streams the container's output itself",
    "-a": "fleet streams the container's output itself",
    "--ip": "the SDK sets addresses only through a network's endpoint config",
    "--ip6": "the SDK sets addresses only through a network's endpoint config",
    "--link-local-ip": "the SDK sets addresses only through a network's endpoint config",
    "--network-alias": "the SDK sets aliases only through a network's endpoint config",
    "--alias": "the SDK sets aliases only through a network's endpoint config",
    "--annotation": "not in the docker SDK",
    "--use-api-socket": "not in the docker SDK",
}


def _restart(flag: str, value: str) -> dict[str, Any]:
    name, _, count = value.partition(":")
    return {"Name": name, "MaximumRetryCount": _int(flag, count) if count else 0}


def tokens(args: Sequence[str]) -> list[str]:
    """One list of words: an argument holding spaces (``"-e A=1"``) is split as a shell would."""
    import shlex

    return [part for arg in args for part in (shlex.split(arg) if " " in arg.strip() else [arg])]


def split(args: Sequence[str]) -> list[tuple[str, str | None]]:
    """``(long flag, value)`` pairs (None for a boolean flag); refuse what cannot be expressed."""
    items = tokens(args)
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(items):
        item = items[i]
        if item.startswith("--"):
            flag, eq, value = item.partition("=")
        elif item.startswith("-") and len(item) > 2 and all(ALIASES.get(f"-{c}") in BOOL_FLAGS for c in item[1:]):
            out.extend((ALIASES[f"-{c}"], None) for c in item[1:])  # -it
            i += 1
            continue
        elif item.startswith("-") and len(item) > 2:
            flag, eq, value = item[:2], "=", item[2:]  # -eA=1, -v/a:/b, -m1g
        else:
            flag, eq, value = item, "", ""
        if flag in CLI_ONLY:
            raise DockerArgsError(
                f"docker argument {flag!r} cannot be expressed through the docker SDK ({CLI_ONLY[flag]})",
                field="docker_args",
            )
        flag = ALIASES.get(flag, flag)
        if flag in BOOL_FLAGS:
            if eq and value.lower() in ("false", "0"):
                out.append((flag, "false"))
            else:
                out.append((flag, None))
            i += 1
            continue
        if flag not in VALUE_FLAGS and flag not in OWN_FLAGS:
            raise DockerArgsError(f"docker argument {item!r} is not a docker run option", field="docker_args")
        if not eq:
            if i + 1 >= len(items):
                raise DockerArgsError(f"docker argument {item!r} needs a value", field="docker_args")
            i += 1
            value = items[i]
        out.append((flag, value))
        i += 1
    return out


def parse(args: Sequence[str], environ: Mapping[str, str] | None = None) -> Parsed:
    """Translate ``docker run`` arguments; ``-e NAME`` takes NAME's value from ``environ``."""
    parsed = Parsed()
    opts = parsed.options
    ports: dict[str, Any] = {}
    for flag, value in split(args):
        if value is None or flag in BOOL_FLAGS:
            keyword = BOOL_FLAGS[flag]
            if keyword is not None:
                opts[keyword] = value is None
                parsed.shown.append(flag if value is None else f"{flag}=false")
            continue
        if flag in OWN_FLAGS:
            _own(flag, value, environ, parsed, ports)
            continue
        keyword, convert, kind = VALUE_FLAGS[flag]
        converted = convert(flag, value)
        if kind == "list":
            opts.setdefault(keyword, []).append(converted)
        elif kind == "map":
            opts.setdefault(keyword, {})[converted[0]] = converted[1]
        else:
            opts[keyword] = converted
        if flag != "--name" and flag != "--workdir":
            parsed.shown.append(f"{flag}={value}")
    if ports:
        opts["ports"] = ports
    _combine(opts)
    return parsed


def _own(flag: str, value: str, environ: Mapping[str, str] | None, parsed: Parsed, ports: dict[str, Any]) -> None:
    if flag == "--volume":
        parts = value.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/"):
            raise _bad("-v", value, "HOST:CONTAINER[:ro|rw]")
        mode = parts[2] if len(parts) == 3 else "rw"
        if mode not in ("ro", "rw"):
            raise DockerArgsError(f"docker argument -v {value!r}: mode must be ro or rw", field="docker_args")
        parsed.volumes[parts[0]] = {"bind": parts[1], "mode": mode}
    elif flag == "--env":
        key, eq, val = value.partition("=")
        if not key:
            raise _bad("-e", value, "NAME=VALUE")
        if eq:
            parsed.environment[key] = val
        elif environ is not None and key in environ:
            parsed.environment[key] = environ[key]
    elif flag == "--env-file":
        parsed.environment.update(_env_file(flag, value, environ))
    elif flag == "--label":
        key, _, val = value.partition("=")
        parsed.labels[key] = val
        parsed.shown.append(f"--label={value}")
    elif flag == "--label-file":
        parsed.labels.update(_env_file(flag, value, None))
    elif flag == "--publish":
        _publish(flag, value, ports)
        parsed.shown.append(f"--publish={value}")
    else:  # --expose
        port, _, proto = value.partition("/")
        ports.setdefault(f"{port}/{proto or 'tcp'}", None)
        parsed.shown.append(f"--expose={value}")


def _combine(opts: dict[str, Any]) -> None:
    """Options that the SDK takes as one structure: the log config and the health check."""
    if "log_driver" in opts or "log_opt" in opts:
        opts["log_config"] = LogConfig(type=opts.pop("log_driver", "json-file"), config=opts.pop("log_opt", {}))
    keys = ("test", "interval", "timeout", "start_period", "retries")
    health = {k: opts.pop(f"health_{k}") for k in keys if f"health_{k}" in opts}
    if opts.pop("no_healthcheck", False):
        health = {"test": ["NONE"]}
    if health:
        opts["healthcheck"] = health
