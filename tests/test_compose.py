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


S3_OVERRIDE = COMPOSE.with_name("docker-compose.s3.yml")


class _Tagged(list):
    """A `!reset` or `!override` sequence of a compose override file."""

    def __init__(self, tag: str, items: list[Any]) -> None:
        super().__init__(items)
        self.tag = tag


def _compose_loader() -> type[yaml.SafeLoader]:
    class Loader(yaml.SafeLoader):
        pass

    for tag in ("!reset", "!override"):
        Loader.add_constructor(
            tag, lambda loader, node, tag=tag: _Tagged(tag, loader.construct_sequence(node))
        )
    return Loader


def merged_services() -> dict[str, Any]:
    """docker-compose.yml with docker-compose.s3.yml on top, merged as `docker compose -f
    A -f B` does: mappings (environment, depends_on) merged key by key, `!reset` and
    `!override` replacing the base's value."""
    base = services()
    override = yaml.load(S3_OVERRIDE.read_text(), Loader=_compose_loader())["services"]
    for name, changes in override.items():
        service = dict(base.get(name, {}))
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(service.get(key), dict):
                service[key] = {**service[key], **value}
            else:
                service[key] = list(value) if isinstance(value, _Tagged) else value
        base[name] = service
    return base


def test_the_s3_option_runs_the_fleet_without_a_shared_volume() -> None:
    merged = merged_services()
    for name in ("worker", "worker-incremental", "beat", "cli"):
        service = merged[name]
        assert "rundata:/data" not in service.get("volumes", []), name
        env = service["environment"]
        assert env["CLAIDEX_RUN_ROOT"].startswith("${S3_RUN_ROOT:-s3://"), name
        for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
            assert variable in env, (name, variable)
        assert env["AWS_SECRET_ACCESS_KEY"].startswith("${AWS_SECRET_ACCESS_KEY:?"), name
        assert merged[name]["depends_on"]["s3"]["required"] is False  # AWS: no s3 service
    assert (
        merged["flower"]["volumes"] == []
        and "AWS_SECRET_ACCESS_KEY" not in merged["flower"]["environment"]
    )
    assert merged["beat"]["volumes"] == ["beatdata:/data"]  # its schedule file, not shared
    s3 = merged["s3"]
    assert s3["image"] == "chrislusf/seaweedfs:4.48"  # the version the suite tests against
    assert "ports" not in s3  # reached on the compose network only
    shared = [n for n, s in merged.items() if "rundata:/data" in s.get("volumes", [])]
    assert shared == []
