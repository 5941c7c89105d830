"""The deployment files agree with each other and with docs/deploy.md, and `chatapp` honours PORT.

Docker is not run here: these tests read the Dockerfile, they do not build it.
"""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
from hypercorn.config import Config as HypercornConfig

from .live_server import clean_environment, free_port

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "deploy.md"


def _read(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


# --- hypercorn.toml ---------------------------------------------------------------------------


def _known_hypercorn_keys() -> set[str]:
    """The settings a Config takes: plain class attributes, properties with a setter, and
    annotation-only ones such as application_path; not methods or read-only properties."""
    known = {name for name in HypercornConfig.__annotations__ if not name.startswith("_")}
    for name in dir(HypercornConfig):
        attribute = inspect.getattr_static(HypercornConfig, name)
        if name.startswith("_") or isinstance(attribute, (classmethod, staticmethod)):
            continue
        if isinstance(attribute, property):
            if attribute.fset is not None:
                known.add(name)
        elif not callable(attribute):
            known.add(name)
    return known


def test_every_hypercorn_toml_key_is_one_hypercorn_knows() -> None:
    # Hypercorn sets unknown keys as plain attributes and never reads them: a typo is silent.
    keys = set(tomllib.loads(_read("hypercorn.toml")))
    unknown = keys - _known_hypercorn_keys()
    assert not unknown, f"hypercorn.toml has keys Hypercorn does not know: {sorted(unknown)}"


def test_hypercorn_toml_loads_with_the_production_defaults() -> None:
    config = HypercornConfig.from_toml(ROOT / "hypercorn.toml")
    assert config.application_path == "chatapp:create_app()"
    assert config.bind == ["127.0.0.1:8000"]  # `make run` stays local
    assert config.workers >= 1
    assert 0 < config.graceful_timeout < 30  # inside the 30 s Heroku and Render wait before SIGKILL
    assert config.keep_alive_timeout > 60  # outlasts nginx's and most load balancers' idle timeout
    assert config.accesslog == "-" and config.errorlog == "-"
    assert "%({x-request-id}o)s" in config.access_log_format


def test_the_access_log_line_carries_the_request_id() -> None:
    from hypercorn.logging import AccessLogAtoms

    config = HypercornConfig.from_toml(ROOT / "hypercorn.toml")
    scope = {
        "type": "http", "http_version": "1.1", "method": "GET", "scheme": "http", "path": "/healthz",
        "query_string": b"", "client": ("10.0.0.1", 5000), "headers": [(b"user-agent", b"probe")],
    }
    response = {"status": 200, "headers": [(b"X-Request-ID", b"abc123def456")]}
    line = config.access_log_format % AccessLogAtoms(scope, response, 0.5)  # type: ignore[arg-type]
    assert "rid=abc123def456" in line and '"GET /healthz 1.1" 200' in line


# --- one start command everywhere -------------------------------------------------------------


def _procfile_command() -> str:
    match = re.search(r"^web:\s*(.+?)\s*$", _read("Procfile"), re.MULTILINE)
    assert match, "the Procfile has no web: line"
    return match.group(1)


def _render_value(key: str) -> str:
    # render.yaml has one service; a regex is enough, and keeps PyYAML out of the dependencies.
    match = re.search(rf"^\s+{key}:\s*(.+?)\s*$", _read("render.yaml"), re.MULTILINE)
    assert match, f"render.yaml has no {key}"
    return match.group(1).strip("\"'")


def _dockerfile_instruction(name: str) -> str:
    """The last NAME instruction, with backslash-continued lines joined."""
    text = re.sub(r"\\\n\s*", " ", _read("Dockerfile"))
    found = re.findall(rf"^{name}\s+(.+?)\s*$", text, re.MULTILINE)
    assert found, f"the Dockerfile has no {name}"
    return found[-1]


def _dockerfile_command() -> str:
    cmd = _dockerfile_instruction("CMD")
    # Exec form, so the server is PID 1 and gets the SIGTERM of `docker stop` itself.
    assert cmd.startswith("["), "CMD must use the exec (JSON) form"
    return " ".join(json.loads(cmd))


def test_procfile_render_and_dockerfile_start_the_same_command() -> None:
    command = _procfile_command()
    assert command.split()[0] == "chatapp"
    assert _render_value("startCommand") == command
    assert _dockerfile_command() == command


def test_the_guide_shows_that_command_and_every_deployment_file() -> None:
    guide = GUIDE.read_text(encoding="utf-8")
    code = "\n".join(re.findall(r"```[a-z]*\n(.*?)```", guide, re.DOTALL))
    assert _procfile_command() in code, "docs/deploy.md never shows the start command in a code block"
    for name in ("Procfile", "render.yaml", "Dockerfile", "deploy/nginx.conf", "hypercorn.toml"):
        assert name in guide
    assert "docker build" in code and "docker run" in code and "-v " in code


def test_render_blueprint_has_the_production_settings() -> None:
    text = _read("render.yaml")
    assert _render_value("healthCheckPath") == "/healthz"
    assert _render_value("buildCommand").startswith("pip install")
    assert "[test]" not in _render_value("buildCommand")
    assert re.search(r"key: OPENAI_API_KEY\s+sync: false", text)
    assert re.search(r"key: SECRET_KEY\s+generateValue: true", text)
    for key, value in [("CHATAPP_ENV", "production"), ("CHATAPP_HTTPS", "true"), ("CHATAPP_TRUSTED_PROXY_HOPS", "1")]:
        assert re.search(rf"key: {key}\s+value: \"?{value}\"?\s", text), key
    # The database file sits on the persistent disk.
    mount = _render_value("mountPath")
    database = re.search(r"key: CHATAPP_DATABASE\s+value: (\S+)", text)
    assert database and database.group(1).startswith(mount.rstrip("/") + "/")


# --- the Dockerfile ---------------------------------------------------------------------------


def test_dockerfile_runs_as_a_non_root_user() -> None:
    user = _dockerfile_instruction("USER").split(":")[0]
    assert user not in ("root", "0")


def test_dockerfile_checks_health_on_healthz() -> None:
    healthcheck = _dockerfile_instruction("HEALTHCHECK")
    assert "/healthz" in healthcheck and "urllib" in healthcheck  # no curl in the slim image


def test_dockerfile_keeps_secrets_and_test_extras_out_of_the_image() -> None:
    dockerfile = _read("Dockerfile")
    copies = re.findall(r"^(?:COPY|ADD)\s+(.+)$", dockerfile, re.MULTILINE)
    assert not any(".env" in line for line in copies)
    assert "[test]" not in dockerfile
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.MULTILINE)
    # `COPY . .` sends the whole build context, so .dockerignore must leave .env and databases out.
    ignored = _read(".dockerignore").split()
    for pattern in (".env", "*.db", ".git", ".venv"):
        assert pattern in ignored


def test_dockerfile_keeps_the_database_on_the_data_volume() -> None:
    dockerfile = _read("Dockerfile")
    assert "CHATAPP_DATABASE=/data/chatapp.db" in dockerfile
    assert re.search(r'^VOLUME \["?/data"?\]', dockerfile, re.MULTILINE)
    assert re.search(r"^EXPOSE 8000$", dockerfile, re.MULTILINE)
    assert "PORT=8000" in dockerfile


# --- the nginx example ------------------------------------------------------------------------


def _nginx_location(pattern: str) -> str:
    text = _read("deploy/nginx.conf")
    match = re.search(rf"location {re.escape(pattern)} \{{(.*?)\n    \}}", text, re.DOTALL)
    assert match, f"deploy/nginx.conf has no location {pattern}"
    return match.group(1)


def test_nginx_passes_the_stream_on_unbuffered() -> None:
    block = _nginx_location("~ ^/c/[^/]+/messages$")
    for directive in ("proxy_buffering off;", "proxy_cache off;", "gzip off;", "proxy_read_timeout 1h;"):
        assert directive in block
    assert re.search(r"^/c/[^/]+/messages$", "/c/uWCdMJgEz9io2OxGUntOAA/messages")


def test_nginx_forwards_host_client_and_scheme() -> None:
    text = _read("deploy/nginx.conf")
    for header in ("Host $host", "X-Forwarded-For $proxy_add_x_forwarded_for", "X-Forwarded-Proto $scheme"):
        assert f"proxy_set_header {header};" in text
    # nginx drops the server's proxy_set_header lines in a location that sets any of its own.
    for block in re.findall(r"location [^{]+\{(.*?)\n    \}", text, re.DOTALL):
        assert "proxy_set_header" not in block


# --- `chatapp` honours PORT -------------------------------------------------------------------


def _serve(tmp_path: Path, **env: str) -> subprocess.Popen[bytes]:
    environment = {
        **clean_environment(),
        "CHATAPP_DATABASE": str(tmp_path / "chatapp.db"),
        "SECRET_KEY": "deploy-test-secret-0123456789abcdef0123",
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "chatapp", "hypercorn.toml"],
        cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )


def _stop(process: subprocess.Popen[bytes]) -> bytes:
    process.terminate()
    try:
        output, _ = process.communicate(timeout=40)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return output


def test_chatapp_binds_the_port_from_the_environment(tmp_path: Path) -> None:
    port = free_port()
    process = _serve(tmp_path, PORT=str(port), WEB_CONCURRENCY="1")
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"chatapp exited with {process.returncode}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                    assert response.status == 200
                    assert response.headers["X-Request-ID"]
                    break
            except OSError:
                assert time.monotonic() < deadline, "chatapp did not answer on $PORT in time"
                time.sleep(0.1)
    finally:
        output = _stop(process)
    assert process.returncode == 0, output.decode(errors="replace")
    log = output.decode(errors="replace")
    assert f"0.0.0.0:{port}" in log  # it bound every interface, as platforms need
    assert "rid=" in log  # the access log line, with the request id


@pytest.mark.parametrize("name, value", [("PORT", "eighty"), ("PORT", "70000"), ("WEB_CONCURRENCY", "0")])
def test_a_bad_port_or_worker_count_stops_start_up_with_status_2(tmp_path: Path, name: str, value: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "chatapp", "hypercorn.toml"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
        env={**clean_environment(), "CHATAPP_DATABASE": str(tmp_path / "x.db"), name: value},
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"chatapp: configuration error: {name} must be a whole number between "
        f"{1} and {65535 if name == 'PORT' else 64}; got {value!r}"
    ]


def test_a_plain_install_carries_the_templates_and_static_files(tmp_path: Path) -> None:
    """`pip install .` (Docker, Render) must ship templates/ and static/ inside the package."""
    import zipfile

    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("chatapp-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "chatapp/presets.toml" in names
    for folder in ("templates", "static"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file():
                assert f"chatapp/{path.relative_to(ROOT)}" in names, path
