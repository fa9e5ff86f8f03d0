"""The control plane's security: loopback by default, a token to bind
anywhere else, and the token never handed to tasks or printed."""

from __future__ import annotations

from tests.conftest import Fleet


def test_non_loopback_bind_needs_a_token(fleet: Fleet) -> None:
    (fleet.root / "fleet.conf").write_text('fleet { api { host: "0.0.0.0" } }')
    result = fleet.cli("up", "--port", "0", "--gpus", "0", "--queue", "q", "--create-queue")
    assert result.returncode == 2
    assert "fleet.api.token" in result.stderr and "0.0.0.0" in result.stderr
    assert not (fleet.home / "manager.json").exists()
    assert fleet.processes() == []


def test_token_guards_every_route_but_health(fleet: Fleet) -> None:
    token = "tok-8d1f0c2b9a"
    (fleet.root / "fleet.conf").write_text(
        f'fleet {{ api {{ host: "0.0.0.0", token: "{token}" }}, stop_grace_seconds: 2 }}'
    )
    fleet.env["FLEET_API_TOKEN"] = token  # also offered to tasks: they must not get it
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    assert fleet.token == token  # the configured token, in the token file for fleetctl
    with fleet.api(prefix="", auth=False) as anonymous:
        assert anonymous.get("/api/v1/health").status_code == 200
        for path in ("/api/v1/tasks", "/api/v1/workers", "/api/v1/queues", "/docs"):
            assert anonymous.get(path).status_code == 401, path
            wrong = anonymous.get(path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401, path
            assert anonymous.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 200, path
        refused = anonymous.post("/api/v1/tasks", json={"command": ["true"], "working_dir": "/", "queue": "q"})
        assert refused.status_code == 401
    assert fleet.ok("tasks", "--json").count('"id"') == 0  # the refused request created nothing

    task_id = fleet.submit("q", "python", "-c", "import os; print('token:', os.environ.get('FLEET_API_TOKEN'))")
    assert fleet.cli("wait", task_id).returncode == 0
    assert "token: None" in fleet.ok("logs", task_id)

    fleet.ok("stop")
    for log in (fleet.home / "logs").rglob("*.log"):
        assert token not in log.read_text(errors="replace"), log


def test_wrong_token_is_a_usage_error(fleet: Fleet) -> None:
    (fleet.root / "fleet.conf").write_text('fleet { api { token: "right-token" }, stop_grace_seconds: 2 }')
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    fleet.env["FLEET_API_TOKEN"] = "wrong-token"
    result = fleet.cli("status")
    assert result.returncode == 2
    assert "token" in result.stderr and "wrong-token" not in result.stderr
    del fleet.env["FLEET_API_TOKEN"]
