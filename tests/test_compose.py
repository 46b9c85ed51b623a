"""docker-compose.yml as deployed: secrets per service, nothing open, restarts (fleet faults)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

COMPOSE = Path(__file__).resolve().parents[1] / "docker-compose.yml"
SECRETS = ("DATABASE_URL", "NEO4J_PASSWORD", "REDIS_URL", "FLOWER_BASIC_AUTH", "REDIS_PASSWORD")


def services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def secrets_of(service: dict[str, Any]) -> set[str]:
    return {name for name in service.get("environment", {}) if name in SECRETS}


def test_each_service_gets_only_its_own_secrets() -> None:
    found = {name: secrets_of(service) for name, service in services().items()}
    assert found["flower"] == {"REDIS_URL", "FLOWER_BASIC_AUTH"}
    assert found["beat"] == {"REDIS_URL"}
    assert found["worker"] == {"REDIS_URL", "DATABASE_URL", "NEO4J_PASSWORD"}
    assert found["worker-incremental"] == found["worker"]
    assert found["redis"] == {"REDIS_PASSWORD"}


def test_flower_is_published_on_loopback_only() -> None:
    assert services()["flower"]["ports"] == ["127.0.0.1:5555:5555"]


def test_redis_runs_unprivileged_and_keeps_its_password_out_of_ps() -> None:
    redis = services()["redis"]
    assert redis["user"] not in ("0", "root", "0:0")
    assert "REDIS_PASSWORD" not in " ".join(redis["healthcheck"]["test"])
    assert redis["environment"]["REDISCLI_AUTH"] == redis["environment"]["REDIS_PASSWORD"]
    assert "requirepass" in redis["command"][-1] and "appendonly yes" in redis["command"][-1]


def test_long_running_services_restart_and_workers_drain_before_sigkill() -> None:
    for name in ("postgres", "redis", "neo4j", "worker", "worker-incremental", "beat", "flower"):
        assert services()[name]["restart"] == "unless-stopped", name
    assert services()["worker"]["stop_grace_period"] == "60m"
    env = services()["worker"]["environment"]
    assert int(env["CLAIDEX_VISIBILITY_TIMEOUT"]) > int(env["CLAIDEX_TASK_TIME_LIMIT"])
