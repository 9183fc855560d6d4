"""docker-compose.yaml and Dockerfile, checked statically (no Docker engine needed).

The stack cannot be started in CI, so these tests pin down the wiring mistakes that
only show up at runtime: a missing shared secret, a wrong service name in a URL, an
unpinned image, a bind mount or COPY of a path that is not in the repo.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
SHARED_ENV = ROOT / "deploy" / "airflow.env"
LOCAL_OVERLAY = ROOT / "deploy" / "local-overlay.sh"

AIRFLOW_SERVICES = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": "celery worker",
    "airflow-init": None,  # a bash script, checked separately
}
OTHER_SERVICES = {"postgres", "redis", "minio", "minio-init"}

# ${VAR}, ${VAR:-default}, ${VAR-default}; `$$` is a literal dollar for the container.
_VAR = re.compile(r"\$\$|\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose's interpolation with an empty .env: every variable takes its default."""
    return _VAR.sub(lambda m: "$" if m.group(0) == "$$" else (m.group(2) or ""), value)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines, comments and blank lines skipped (compose's env_file format)."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def environment_of(service: dict) -> dict[str, str]:
    """The service's own ``environment:`` (not its env_file), interpolated."""
    env = service.get("environment") or {}
    if isinstance(env, list):  # the "KEY=value" list form
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(str(v)) for k, v in env.items()}


def env_of(service: dict) -> dict[str, str]:
    """What the container gets: env_file values, overridden by ``environment:``."""
    env: dict[str, str] = {}
    for path in service.get("env_file") or []:
        env.update(read_env_file(COMPOSE.parent / path))
    return {**env, **environment_of(service)}


def command_text(service: dict) -> str:
    command = service.get("command", "")
    return command if isinstance(command, str) else " ".join(map(str, command))


def assert_pinned(image: str) -> None:
    name, _, tag = image.rpartition(":")
    assert name and "/" not in tag, f"{image!r} has no tag"
    assert tag and tag != "latest", f"{image!r} is not pinned"
    assert "${" not in image, f"{image!r} depends on the environment"


def test_required_services_exist(services):
    missing = (set(AIRFLOW_SERVICES) | OTHER_SERVICES) - set(services)
    assert not missing, f"services missing from docker-compose.yaml: {sorted(missing)}"


def test_airflow_services_use_common_anchor(compose, services):
    common = compose["x-airflow-common"]
    assert common["image"] == "genreflow-airflow:local"
    assert common["build"] in (".", {"context": "."})
    common_env = env_of(common)
    for name, command in AIRFLOW_SERVICES.items():
        service = services[name]
        assert service.get("image") == common["image"], name
        assert service.get("env_file") == ["deploy/airflow.env"], name
        assert service.get("build") == common["build"], name
        env = env_of(service)
        differing = {k for k, v in common_env.items() if env.get(k) != v}
        assert not differing, f"{name} overrides/misses common env: {sorted(differing)}"
        if command:
            assert command_text(service) == command, name


def test_airflow_init_migrates_and_runs_after_minio_init(services):
    init = services["airflow-init"]
    script = command_text(init)
    assert "airflow db migrate" in script
    assert "SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" in script
    assert init["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    for name in set(AIRFLOW_SERVICES) - {"airflow-init"}:
        condition = services[name]["depends_on"]["airflow-init"]["condition"]
        assert condition == "service_completed_successfully", name


def test_long_running_services_have_healthchecks(services):
    one_shot = {"airflow-init", "minio-init"}
    for name, service in services.items():
        if name not in one_shot:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    assert services["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"


def test_celery_executor_with_redis_and_postgres(compose):
    env = env_of(compose["x-airflow-common"])
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert urlparse(env["AIRFLOW__CELERY__BROKER_URL"]).hostname == "redis"
    assert urlparse(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).hostname == "postgres"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"


def test_shared_env_file_is_read_literally_by_compose_and_the_cluster_script():
    """Both readers take values literally only when there is nothing to interpolate."""
    for number, line in enumerate(SHARED_ENV.read_text().splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            assert re.fullmatch(r"[A-Z][A-Z0-9_]*=[^'\"$\s]*", line), f"line {number}: {line!r}"
    assert read_env_file(SHARED_ENV)["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"


def test_compose_environment_only_holds_what_differs_locally(compose):
    """Compose's own values never silently shadow the shared file, and the cluster
    script's overlay gives every one of them a local value (API keys pass through)."""
    shared = read_env_file(SHARED_ENV)
    compose_only = set(environment_of(compose["x-airflow-common"]))
    assert not compose_only & set(shared), "set in both deploy/airflow.env and compose"
    overlay = set(re.findall(r"^export (\w+)=", LOCAL_OVERLAY.read_text(), re.MULTILINE))
    assert not overlay & set(shared), "the overlay must not redefine shared settings"
    missing = compose_only - overlay - {"SPOTIPY_CLIENT_ID", "SPOTIPY_CLIENT_SECRET",
                                        "JAMENDO_CLIENT_ID"}
    assert not missing, f"no local value in deploy/local-overlay.sh for {sorted(missing)}"


def test_two_workers(services):
    assert services["airflow-worker"]["deploy"]["replicas"] == 2


def test_jwt_secret_shared_by_all_airflow_services(services):
    secrets = {
        name: env_of(services[name]).get("AIRFLOW__API_AUTH__JWT_SECRET")
        for name in AIRFLOW_SERVICES
    }
    assert all(secrets.values()), f"JWT secret unset in: {secrets}"
    assert len(set(secrets.values())) == 1, f"JWT secrets differ: {secrets}"


def test_execution_api_url_points_at_api_server(services):
    url = urlparse(env_of(services["airflow-scheduler"])["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert url.hostname == "airflow-apiserver"
    assert url.path == "/execution/"
    assert command_text(services[url.hostname]) == "api-server"
    published = [str(p).split(":")[-1] for p in services[url.hostname].get("ports", [])]
    assert str(url.port) in published


def test_simple_auth_manager_admin(compose, services):
    env = env_of(compose["x-airflow-common"])
    assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith("SimpleAuthManager")
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin"
    assert env_of(services["airflow-init"])["AIRFLOW_ADMIN_PASSWORD"]


@pytest.mark.parametrize("service", ["postgres", "redis", "minio", "minio-init"])
def test_images_pinned(services, service):
    assert_pinned(services[service]["image"])


def test_postgres_16(services):
    assert services["postgres"]["image"].split(":")[1].split(".")[0] == "16"


def test_minio_ports_and_credentials(compose, services):
    minio = services["minio"]
    assert {"9000:9000", "9001:9001"} <= {str(p) for p in minio["ports"]}
    assert "minio/minio:RELEASE." in minio["image"]
    assert "minio/mc:RELEASE." in services["minio-init"]["image"]
    root = env_of(minio)
    airflow = env_of(compose["x-airflow-common"])
    # The pipeline authenticates as MinIO's root user: both must resolve the same.
    assert airflow["AWS_ACCESS_KEY_ID"] == root["MINIO_ROOT_USER"]
    assert airflow["AWS_SECRET_ACCESS_KEY"] == root["MINIO_ROOT_PASSWORD"]
    assert urlparse(airflow["AWS_ENDPOINT_URL"]).hostname == "minio"
    assert airflow["AWS_DEFAULT_REGION"] == "us-east-1"


def test_minio_init_creates_store_bucket(compose, services):
    env = env_of(compose["x-airflow-common"])
    script = command_text(services["minio-init"])
    buckets = set(re.findall(r"mc mb (?:--\S+ )*local/([\w.-]+)", script))
    for var in ("GENREFLOW_STORE", "GENREFLOW_INBOX", "GENREFLOW_VALID_CSV"):
        uri = urlparse(env[var])
        assert uri.scheme == "s3", var
        assert uri.hostname in buckets, f"{var}={env[var]} names a bucket minio-init never creates"


def test_project_env(compose):
    env = env_of(compose["x-airflow-common"])
    assert env["GENREFLOW_STORE"] == "s3://genreflow/store"
    assert env["GENREFLOW_INBOX"] == "s3://genreflow/inbox"
    assert env["GENREFLOW_VALID_CSV"] == "s3://genreflow/valid/valid.csv"
    assert env["GENREFLOW_WORKERS"] == "2"
    assert env["GENREFLOW_HOME"] == "/opt/genreflow"
    assert "SPOTIPY_CLIENT_ID" in env and "SPOTIPY_CLIENT_SECRET" in env
    assert "JAMENDO_CLIENT_ID" in env


def test_s3_connection_json(compose, services):
    env = env_of(compose["x-airflow-common"])
    conn = json.loads(env["AIRFLOW_CONN_GENREFLOW_S3"])
    assert conn["conn_type"] == "aws"
    assert conn["login"] == env["AWS_ACCESS_KEY_ID"]
    assert conn["password"] == env["AWS_SECRET_ACCESS_KEY"]
    endpoint = urlparse(conn["extra"]["endpoint_url"])
    assert endpoint.hostname == "minio" and endpoint.hostname in services
    assert conn["extra"]["region_name"] == "us-east-1"


def test_bind_mounts_exist(compose, services):
    sources = []
    for name, service in [("x-airflow-common", compose["x-airflow-common"]), *services.items()]:
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source")
            if source and source.startswith((".", "/")):
                sources.append((name, source))
    assert ("x-airflow-common", "./dags") in sources
    for name, source in sources:
        assert (COMPOSE.parent / source).is_dir(), f"{name}: bind mount {source} does not exist"
    targets = {v.split(":")[1] for v in compose["x-airflow-common"]["volumes"]}
    assert {"/opt/airflow/dags", "/opt/airflow/plugins", "/opt/genreflow/include"} <= targets


def test_named_volumes_declared(compose, services):
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} is not declared"


def dockerfile_instructions() -> list[tuple[str, list[str]]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = (line.strip() for line in text.splitlines())
    return [
        (line.split()[0].upper(), shlex.split(line)[1:])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_base_image_pinned():
    froms = [args for op, args in dockerfile_instructions() if op == "FROM"]
    assert froms, "Dockerfile has no FROM"
    image = froms[0][-1]
    assert_pinned(image)
    assert image.startswith("apache/airflow:3.3.2-python3.11"), image


def test_dockerfile_copies_existing_files():
    copies = [args for op, args in dockerfile_instructions() if op in ("COPY", "ADD")]
    assert copies
    for args in copies:
        args = [a for a in args if not a.startswith("--")]
        for source in args[:-1]:
            assert (ROOT / source).exists(), f"Dockerfile copies {source}, not in the repo"


def test_dockerfile_matches_requirements_airflow_pin():
    """The image's Airflow and Python (its FROM tag) are the ones requirements.txt,
    constraints.txt and pyproject.toml pin, and the image installs requirements.txt:
    otherwise pip in the image moves Airflow, or the image runs another Python."""
    instructions = dockerfile_instructions()
    image = next(args for op, args in instructions if op == "FROM")[-1]
    tag = re.fullmatch(r"apache/airflow:(\d+\.\d+\.\d+)-python(\d+\.\d+)", image)
    assert tag, f"FROM {image} names no apache/airflow:<version>-python<version>"
    for name in ("requirements.txt", "constraints.txt"):
        pins = re.findall(r"^apache-airflow==(\S+)", (ROOT / name).read_text(), re.MULTILINE)
        assert pins == [tag[1]], f"{name} pins Airflow {pins}, the image has {tag[1]}"
    python = re.findall(r'^requires-python = ">=(\d+\.\d+),', (ROOT / "pyproject.toml").read_text(),
                        re.MULTILINE)
    assert python == [tag[2]], f"the image has Python {tag[2]}, pyproject.toml {python}"
    runs = [" ".join(args) for op, args in instructions if op == "RUN"]
    assert any("pip install" in run and "-r /opt/genreflow/requirements.txt" in run
               for run in runs), "the image never installs requirements.txt"


def test_dockerignore_keeps_local_state_out():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", "var", ".git", "airflow-home", "bench/out"} <= ignored
    for needed in ("src", "include", "pyproject.toml", "requirements.txt"):
        assert needed not in ignored


def test_docker_compose_config_validates():
    """`docker compose config` validates against the real schema. Skipped only when the
    compose plugin is missing, as `docker compose version` says: a failing config is a
    failure whatever its message says."""
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI")
    plugin = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True,
                            timeout=60)
    if plugin.returncode != 0:
        pytest.skip("no docker compose plugin (`docker compose version` failed)")
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


def test_serve_reads_the_same_bucket_on_loopback_with_a_token(compose, services):
    """genreflow-serve: the pipeline's image and settings (so the same GENREFLOW_STORE),
    published on the host's loopback only, and a bearer token since it binds 0.0.0.0."""
    serve = services["genreflow-serve"]
    assert serve["image"] == compose["x-airflow-common"]["image"]
    assert serve["env_file"] == ["deploy/airflow.env"]
    assert "GENREFLOW_STORE" in read_env_file(SHARED_ENV)
    assert serve["entrypoint"] == ["genreflow"]
    assert command_text(serve).startswith("serve --host 0.0.0.0 --port 8000")
    assert [interpolate(str(p)) for p in serve["ports"]] == ["127.0.0.1:8000:8000"]
    assert interpolate(env_of(serve)["GENREFLOW_SERVE_TOKEN"])
    assert env_of(serve)["AWS_ENDPOINT_URL"] == env_of(compose["x-airflow-common"])[
        "AWS_ENDPOINT_URL"]
