"""The deployment files agree with each other and with docs/deploy.md, and `chatapp` honours PORT.

Docker is not run here: these tests read the Dockerfile, they do not build it. nginx is run, with
deploy/nginx.conf in front of the app, when it is installed.
"""

from __future__ import annotations

import http.client
import inspect
import io
import json
import logging
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterable, Iterator
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypercorn.config import Config as HypercornConfig
from hypercorn.logging import Logger as HypercornLogger

from chatapp import logs
from chatapp.config import load_config, parse_networks
from chatapp.logs import REDACTED
from chatapp.web.assets import StaticFiles

from .support.live_server import CANARY_KEY, clean_environment, free_port, stop

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


# One access line: Hypercorn's prefix, then hypercorn.toml's fields. A quoted field may hold \" and \\.
_QUOTED = r'"((?:[^"\\]|\\.)*)"'
ACCESS_LINE = re.compile(
    rf"^\[[^\]]+\] \[\d+\] \[INFO\] (\S+) {_QUOTED} \[[^\]]+\] {_QUOTED} (\S+) (\S+) [\d.]+s rid=(\S+) {_QUOTED}$"
)


@pytest.fixture
def hypercorn_logger(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[HypercornLogger, io.StringIO]]:
    """Hypercorn's logger as hypercorn.toml sets it up, with chatapp's filters, writing here."""
    loggers = [logging.getLogger(name) for name in ("hypercorn.access", "hypercorn.error")]
    saved = [(lg.handlers[:], lg.filters[:], lg.level, lg.propagate) for lg in loggers]
    written = io.StringIO()
    monkeypatch.setattr(sys, "stdout", written)  # where Hypercorn's `accesslog = "-"` handler writes
    hypercorn_log = HypercornLogger(HypercornConfig.from_toml(ROOT / "hypercorn.toml"))
    for lg in loggers:
        lg.filters = []  # this test's secrets, not those of an app another test made
    logs.redact_handlers(load_config({}, openai_api_key=CANARY_KEY))
    yield hypercorn_log, written
    for lg, (handlers, filters, level, propagate) in zip(loggers, saved):
        lg.handlers, lg.filters, lg.propagate = handlers, filters, propagate
        lg.setLevel(level)


async def test_request_fields_cannot_forge_access_log_fields_or_lines(
    hypercorn_logger: tuple[HypercornLogger, io.StringIO],
) -> None:
    hypercorn_log, written = hypercorn_logger
    scope = {
        "type": "http", "http_version": "1.1", "method": "GET", "scheme": "http", "query_string": b"",
        # The path arrives percent-decoded: /c/x%22%20200%20%22%0A... carries a quote and a newline.
        "path": '/c/x" 200 "\n[01/Jan/2026:00:00:00 +0000] "GET /forged', "client": ("10.0.0.1", 5000),
        "headers": [(b"user-agent", f'a" 200 "forged \\ {CANARY_KEY}'.encode()),
                    (b"x-forwarded-for", '1.2.3.4" "x\n\x85\x1b[2J'.encode("latin-1"))],
    }
    response = {"status": 404, "headers": [(b"X-Request-ID", b"abc123def456"), (b"Content-Length", b"9")]}
    await hypercorn_log.access(scope, response, 0.25)  # type: ignore[arg-type]
    (line,) = written.getvalue().splitlines()  # splitlines also breaks at \x85
    match = ACCESS_LINE.match(line)
    assert match, line
    assert match.groups() == (
        "10.0.0.1:5000",
        r'1.2.3.4\" \"x\n\x85\x1b[2J',
        r'GET /c/x\" 200 \"\n[01/Jan/2026:00:00:00 +0000] \"GET /forged 1.1',
        "404", "9", "abc123def456",
        rf'a\" 200 \"forged \\ {REDACTED}',  # escaped field by field, then redacted
    )


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
    for name in ("Procfile", "render.yaml", "Dockerfile", "deploy/nginx.conf", "hypercorn.toml", "deploy/compose.yaml",
                 "deploy/kubernetes.yaml", "deploy/render-postgres.yaml"):
        assert name in guide
    assert "docker build" in code and "docker run" in code and "-v " in code


def test_render_blueprint_has_the_production_settings() -> None:
    text = _read("render.yaml")
    assert _render_value("healthCheckPath") == "/healthz"
    assert _render_value("buildCommand").startswith("pip install")
    assert "[test]" not in _render_value("buildCommand")
    assert re.search(r"key: OPENAI_API_KEY\s+sync: false", text)
    assert re.search(r"key: SECRET_KEY\s+generateValue: true", text)
    for key, value in [("CHATAPP_ENV", "production"), ("CHATAPP_HTTPS", "true")]:
        assert re.search(rf"key: {key}\s+value: \"?{value}\"?\s", text), key
    # Render's proxy connects from its private network: trust that, and nothing the internet can reach.
    proxies = re.search(r"key: CHATAPP_TRUSTED_PROXIES\s+value: \"?([^\"\n]+)\"?\s", text)
    assert proxies, "render.yaml does not say which proxies to trust"
    networks = parse_networks(proxies.group(1))
    assert networks and all(network.is_private for network in networks)
    # The database file sits on the persistent disk.
    mount = _render_value("mountPath")
    database = re.search(r"key: CHATAPP_DATABASE\s+value: (\S+)", text)
    assert database and database.group(1).startswith(mount.rstrip("/") + "/")


# --- several replicas: deploy/compose.yaml, deploy/kubernetes.yaml, deploy/render-postgres.yaml ---

_KEY = re.compile(r'([A-Za-z0-9_./-]+):(?: (.*))?')


def _uncommented(line: str) -> str:
    quote = None
    for at, char in enumerate(line):
        if char in "\"'" and quote in (None, char):
            quote = None if quote else char
        elif char == "#" and quote is None and (at == 0 or line[at - 1] == " "):
            return line[:at]
    return line


def _plain_yaml(text: str) -> Any:
    """The YAML the deployment files keep to, read without a YAML library: block mappings and
    lists, scalars (plain, or quoted), and lists in JSON form. Anything else is refused, so that
    a file that grows anchors or block scalars fails here rather than being read wrongly."""
    lines = [(len(line) - len(line.lstrip(" ")), line.strip()) for line in map(_uncommented, text.splitlines())
             if line.strip()]
    value, end = _yaml_block(lines, 0)
    assert end == len(lines), f"not plain block YAML near {lines[end][1]!r}"
    return value


def _yaml_block(lines: list[tuple[int, str]], at: int) -> tuple[Any, int]:
    indent = lines[at][0]
    if lines[at][1].startswith("- "):
        items = []
        while at < len(lines) and lines[at][0] == indent and lines[at][1].startswith("- "):
            item = lines[at][1][2:].strip()
            if _KEY.fullmatch(item):  # a mapping that starts on the dash's line
                lines[at] = (indent + 2, item)
                value, at = _yaml_block(lines, at)
            else:
                value, at = _yaml_scalar(item), at + 1
            items.append(value)
        return items, at
    mapping: dict[str, Any] = {}
    while at < len(lines) and lines[at][0] == indent:
        match = _KEY.fullmatch(lines[at][1])
        assert match, f"not plain block YAML: {lines[at][1]!r}"
        key, rest = match.groups()
        assert key not in mapping, f"{key} twice"
        if rest:
            mapping[key], at = _yaml_scalar(rest), at + 1
        elif at + 1 < len(lines) and lines[at + 1][0] > indent:
            mapping[key], at = _yaml_block(lines, at + 1)
        else:
            mapping[key], at = None, at + 1
    return mapping, at


def _yaml_scalar(text: str) -> Any:
    assert text[0] not in "&*|>{!%@`", f"not plain block YAML: {text!r}"
    if text[0] in '["':
        return json.loads(text)
    if text[0] == "'":
        assert text.endswith("'")
        return text[1:-1].replace("''", "'")
    return text


def _documents(name: str) -> list[Any]:
    """The YAML documents of a deployment file (separated by `---` lines)."""
    parts = re.split(r"^---$", _read(name), flags=re.MULTILINE)
    return [_plain_yaml(part) for part in parts if any(map(str.strip, map(_uncommented, part.splitlines())))]


# Names the environment may hold besides the app's settings: `chatapp` reads PORT and WEB_CONCURRENCY.
_COMMAND_SETTINGS = {"PORT", "WEB_CONCURRENCY"}


def _are_settings(names: Iterable[str]) -> None:
    from chatapp.config import SETTINGS

    unknown = set(names) - set(SETTINGS) - _COMMAND_SETTINGS
    assert not unknown, f"not settings of the app: {sorted(unknown)}"


def test_the_plain_yaml_reader_reads_what_the_files_hold() -> None:
    text = ('a: 1 # note\nb:\n  - "x # y"\n  - k: v\n    l: \'it\'\'s\'\nc: ["p", "q"]\nd:\n  e: f:g\n')
    assert _plain_yaml(text) == {"a": "1", "b": ["x # y", {"k": "v", "l": "it's"}], "c": ["p", "q"], "d": {"e": "f:g"}}
    for refused in ("a: &x 1\n", "a: |\n  b\n", "a: {b: c}\n"):
        with pytest.raises(AssertionError):
            _plain_yaml(refused)


def test_compose_runs_replicas_on_one_postgresql_behind_nginx() -> None:
    services = _documents("deploy/compose.yaml")[0]["services"]
    replicas = {name: service for name, service in services.items()
                if "CHATAPP_REPLICA" in (service.get("environment") or {})}
    assert len(replicas) >= 2
    assert sorted(service["environment"]["CHATAPP_REPLICA"] for service in replicas.values()) == sorted(replicas)

    # One database for all: the postgres service's, its password from deploy/.env, never written here.
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:15"
    assert postgres["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    url = urlsplit(services["migrate"]["environment"]["CHATAPP_DATABASE_URL"])
    assert (url.scheme, url.hostname, url.path) == ("postgresql", "postgres", "/" + postgres["environment"]["POSTGRES_DB"])
    assert url.username == postgres["environment"]["POSTGRES_USER"] and url.password == "${POSTGRES_PASSWORD}"

    # The replicas are one another's copies, built from the Dockerfile, with their secrets in deploy/.env.
    first, *others = replicas.values()
    for service in replicas.values():
        alike = {**service, "environment": {**service["environment"], "CHATAPP_REPLICA": ""}}
        assert alike == {**first, "environment": {**first["environment"], "CHATAPP_REPLICA": ""}}
    for service in [services["migrate"], *replicas.values()]:
        assert service["build"] == ".." and service["image"] == "chatapp" and service["env_file"] == ".env"
        assert service["environment"]["CHATAPP_DATABASE_URL"] == url.geturl()
        _are_settings(service["environment"])
    assert ".env" in _read(".gitignore").split()

    # Migrations once, after the database is up and before any replica starts.
    assert services["migrate"]["command"] == ["chatapp", "migrate"]
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["migrate"]["restart"] == "no"
    for service in replicas.values():
        assert service["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
        assert "/readyz" in " ".join(service["healthcheck"]["test"])
        assert int(service["stop_grace_period"].removesuffix("s")) > 25  # the app's graceful_timeout

    # nginx: deploy/nginx.conf as shipped, its upstream made of the replicas, and the one proxy they trust.
    nginx = services["nginx"]
    assert "./nginx.conf:/etc/chatapp/nginx.conf:ro" in nginx["volumes"]
    script = nginx["command"][-1]
    replaced = re.search(r"'s/(server 127\.0\.0\.1:8000;)/([^/]+)/'", script)
    assert replaced and replaced.group(1) in _read("deploy/nginx.conf")
    assert re.findall(r"server (\S+):8000;", replaced.group(2)) == list(replicas)
    assert set(nginx["depends_on"]) == set(replicas)
    address = nginx["networks"]["default"]["ipv4_address"]
    (subnet,) = [entry["subnet"] for entry in _documents("deploy/compose.yaml")[0]["networks"]["default"]["ipam"]["config"]]
    assert ip_address(address) in ip_network(subnet)
    for service in replicas.values():
        assert parse_networks(service["environment"]["CHATAPP_TRUSTED_PROXIES"]) == parse_networks(address)
        assert service["environment"]["CHATAPP_HTTPS"] == "true" and "ports" not in service  # only through nginx


def test_kubernetes_example_probes_migrates_and_keeps_secrets_in_a_secret() -> None:
    documents = {document["kind"]: document for document in _documents("deploy/kubernetes.yaml")}
    assert set(documents) == {"Job", "Deployment", "Service"}
    (migrate,) = documents["Job"]["spec"]["template"]["spec"]["containers"]
    pod = documents["Deployment"]["spec"]["template"]
    (app,) = pod["spec"]["containers"]
    assert migrate["command"] == ["chatapp", "migrate"] and migrate["image"] == app["image"]
    assert migrate["envFrom"] == app["envFrom"] == [{"secretRef": {"name": "chatapp"}}]
    _are_settings(variable["name"] for variable in app["env"])
    assert app["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "8000"}
    assert app["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "8000"}
    assert int(pod["spec"]["terminationGracePeriodSeconds"]) > 25
    assert int(documents["Deployment"]["spec"]["replicas"]) >= 2
    service = documents["Service"]["spec"]
    assert service["selector"] == pod["metadata"]["labels"] == documents["Deployment"]["spec"]["selector"]["matchLabels"]
    assert service["ports"][0]["targetPort"] == app["ports"][0]["containerPort"] == "8000"


def test_render_postgresql_blueprint_runs_several_instances_on_its_database() -> None:
    blueprint = _documents("deploy/render-postgres.yaml")[0]
    (database,) = blueprint["databases"]
    (service,) = blueprint["services"]
    assert database["postgresMajorVersion"] == "15" and database["ipAllowList"] == []
    assert int(service["numInstances"]) >= 2 and "disk" not in service
    assert service["startCommand"] == _procfile_command() and service["preDeployCommand"] == "chatapp migrate"
    variables = {variable["key"]: variable for variable in service["envVars"]}
    assert variables["CHATAPP_DATABASE_URL"]["fromDatabase"] == {"name": database["name"], "property": "connectionString"}
    assert variables["SECRET_KEY"] == {"key": "SECRET_KEY", "generateValue": "true"}
    assert variables["OPENAI_API_KEY"] == {"key": "OPENAI_API_KEY", "sync": "false"}
    _are_settings(set(variables) - {"PYTHON_VERSION"})
    # The rest as in render.yaml, the single instance on SQLite.
    for key in ("PYTHON_VERSION", "CHATAPP_ENV", "CHATAPP_HTTPS", "CHATAPP_TRUSTED_PROXIES"):
        assert re.search(rf"key: {key}\s+value: \"?{re.escape(variables[key]['value'])}\"?\s", _read("render.yaml")), key
    assert service["buildCommand"] == _render_value("buildCommand")


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


def test_nginx_sets_the_forwarded_headers_and_clears_the_others() -> None:
    text = _read("deploy/nginx.conf")
    # The client's own X-Forwarded-For is replaced, not appended to: nginx is the only hop.
    for header in ("Host $host", "X-Forwarded-For $remote_addr", "X-Forwarded-Proto $scheme",
                   'X-Forwarded-Host ""', 'Forwarded ""'):
        assert f"proxy_set_header {header};" in text
    assert re.findall(r"proxy_set_header X-Forwarded-For (.*);", text) == ["$remote_addr"]
    # nginx drops the server's proxy_set_header and add_header lines in a location that sets any of
    # its own: the forwarded headers and the fallback security headers would be lost there.
    blocks = re.findall(r"^    location [^{\n]+\{(.*?)\n    \}", text, re.DOTALL | re.MULTILINE)
    assert len(blocks) == 2  # the stream, and everything else
    for block in blocks:
        assert "proxy_set_header" not in block and "add_header" not in block


def test_nginx_fallback_security_headers_are_the_apps() -> None:
    from chatapp.web.http import SECURITY_HEADERS

    text = _read("deploy/nginx.conf")
    added = dict(re.findall(r"^    add_header (\S+) \$(\w+) always;$", text, re.MULTILINE))
    for name, value in SECURITY_HEADERS.items():
        variable = added.get(name)
        assert variable, f"deploy/nginx.conf does not add {name} to the answers the app did not make"
        # Only when the answer lacks the app's headers; never a second copy on the app's own.
        block = re.search(rf"map \$upstream_http_x_content_type_options \${variable} \{{(.*?)\n\}}", text, re.DOTALL)
        assert block, f"no map for ${variable}"
        values = re.findall(r'^\s*(""|default)\s+"(.*)";$', block.group(1), re.MULTILINE)
        assert values == [('""', value), ("default", "")], name


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


def _wait_for_health(process: subprocess.Popen[bytes], port: int) -> http.client.HTTPResponse:
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, f"chatapp exited with {process.returncode}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                assert response.status == 200
                return response
        except OSError:
            assert time.monotonic() < deadline, "chatapp did not answer on $PORT in time"
            time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> bytes:
    return stop(process)[0]


def test_chatapp_binds_the_port_from_the_environment(tmp_path: Path) -> None:
    port = free_port()
    process = _serve(tmp_path, PORT=str(port), WEB_CONCURRENCY="1")
    try:
        assert _wait_for_health(process, port).headers["X-Request-ID"]
    finally:
        output = _stop(process)
    assert process.returncode == 0, output.decode(errors="replace")
    log = output.decode(errors="replace")
    assert f"0.0.0.0:{port}" in log  # it bound every interface, as platforms need
    assert "rid=" in log  # the access log line, with the request id


def test_a_running_server_writes_one_honest_access_line(tmp_path: Path) -> None:
    port = free_port()
    process = _serve(tmp_path, PORT=str(port), WEB_CONCURRENCY="1")
    try:
        _wait_for_health(process, port)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b'GET /x%22%20200%20%22%0A[01/Jan/2026:00:00:00%20+0000]%20%22GET%20/forged HTTP/1.1\r\n'
                         b'Host: localhost\r\nUser-Agent: a" 200 "forged\r\nX-Forwarded-For: 1.2.3.4" "x\\\r\n'
                         b"Connection: close\r\n\r\n")
            reply = b"".join(iter(lambda: sock.recv(65536), b""))
        assert reply.startswith(b"HTTP/1.1 404")
    finally:
        output = _stop(process).decode(errors="replace")
    (line,) = [line for line in output.splitlines() if "forged" in line]
    match = ACCESS_LINE.match(line)
    assert match, line
    _, forwarded_for, request, status, _, _, agent = match.groups()
    assert forwarded_for == r'1.2.3.4\" \"x\\'
    assert request == r'GET /x\" 200 \"\n[01/Jan/2026:00:00:00 +0000] \"GET /forged 1.1'
    assert (status, agent) == ("404", r'a\" 200 \"forged')


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


# --- the nginx example, in front of the real app ----------------------------------------------

NGINX = shutil.which("nginx")


def _nginx_config(tmp_path: Path, app_port: int, https_port: int) -> Path:
    """deploy/nginx.conf as shipped, with local ports and a throwaway certificate, inside the
    http block that /etc/nginx/nginx.conf gives it."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=chat.example.com", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    site = _read("deploy/nginx.conf")
    for old, new in [
        ("listen 80;", f"listen 127.0.0.1:{free_port()};"),
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;"),
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{app_port};"),
        ("/etc/letsencrypt/live/chat.example.com/fullchain.pem", str(cert)),
        ("/etc/letsencrypt/live/chat.example.com/privkey.pem", str(key)),
    ]:
        assert old in site, old
        site = site.replace(old, new)
    site = re.sub(r"^\s*listen \[::\]:.*\n", "", site, flags=re.MULTILINE)  # the test host may lack IPv6
    (tmp_path / "chatapp.conf").write_text(site)
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temp = " ".join(f"{kind}_temp_path {tmp_path / kind};" for kind in kinds)
    config = tmp_path / "nginx.conf"
    config.write_text(
        f"daemon off; master_process off; pid {tmp_path / 'nginx.pid'}; error_log {tmp_path / 'error.log'};\n"
        f"events {{}}\nhttp {{ access_log off; {temp} include {tmp_path / 'chatapp.conf'}; }}\n"
    )
    return config


def _ask(port: int, path: str, cafile: Path, **headers: str) -> http.client.HTTPResponse:
    context = ssl.create_default_context(cafile=str(cafile))
    context.check_hostname = False  # the throwaway certificate names chat.example.com, not 127.0.0.1
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        connection.request("GET", path, headers={"Host": "chat.example.com", **headers})
        response = connection.getresponse()
        response.read()
        return response
    finally:
        connection.close()


def _carries_the_security_headers_once(response: http.client.HTTPResponse) -> None:
    from chatapp.web.http import SECURITY_HEADERS

    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get_all(name) == [value], name


def test_nginx_in_front_of_the_app(tmp_path: Path) -> None:
    if NGINX is None or shutil.which("openssl") is None:
        if os.environ.get("CHATAPP_REQUIRE_NGINX"):  # CI: it must run there, never skip
            raise RuntimeError("CHATAPP_REQUIRE_NGINX is set but nginx or openssl is not installed")
        pytest.skip("needs nginx and openssl (apt-get install nginx openssl)")
    app_port, https_port = free_port(), free_port()
    config = _nginx_config(tmp_path, app_port, https_port)
    cert = tmp_path / "cert.pem"
    app = _serve(tmp_path, PORT=str(app_port), WEB_CONCURRENCY="1", CHATAPP_HTTPS="true",
                 CHATAPP_TRUSTED_PROXIES="127.0.0.1,::1")
    nginx = subprocess.Popen([NGINX, "-c", str(config), "-p", str(tmp_path)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        try:
            deadline = time.monotonic() + 30
            while True:
                assert app.poll() is None and nginx.poll() is None, (tmp_path / "error.log").read_text()
                try:
                    if _ask(https_port, "/healthz", cert).status == 200:
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline, "the app did not answer through nginx in time"
                time.sleep(0.1)

            # The Host the client sent and the scheme nginx saw, whatever the client claims besides.
            redirect = _ask(https_port, "/c//x", cert, **{
                "X-Forwarded-Host": "evil.example", "Forwarded": "for=198.51.100.7;host=evil.example;proto=http",
                "X-Forwarded-Proto": "http", "X-Forwarded-For": "203.0.113.9",
            })
            assert redirect.status == 308 and redirect.headers["Location"] == "https://chat.example.com/c/x"

            # The app's own answer: its security headers once each, never a second copy from nginx.
            _carries_the_security_headers_once(_ask(https_port, "/healthz", cert))

            # Static files keep the app's caching: a year for the current version's URL, an hour
            # for any other (nginx once overrode both with a day).
            version = StaticFiles(ROOT / "static").version("app.css")
            current = _ask(https_port, f"/static/app.css?v={version}", cert)
            assert current.status == 200
            assert current.headers.get_all("Cache-Control") == ["public, max-age=31536000, immutable"]
            (made_up,) = _ask(https_port, "/static/app.css?v=0123456789ab", cert).headers.get_all("Cache-Control")
            assert "immutable" not in made_up and "max-age=86400" not in made_up

            # A control character that nginx passes on and Hypercorn's HTTP parser refuses: Hypercorn
            # answers by itself, without the app (no request id), and nginx adds the headers.
            refused = _ask(https_port, "/healthz", cert, **{"X-Odd": "a\x0bb"})
            assert refused.status in (400, 431) and "X-Request-ID" not in refused.headers
            _carries_the_security_headers_once(refused)
        finally:
            log = _stop(app).decode(errors="replace")

        down = _ask(https_port, "/healthz", cert)  # nginx's own 502, the app being gone
        assert down.status == 502
        _carries_the_security_headers_once(down)
    finally:
        nginx.terminate()
        nginx.communicate(timeout=30)

    # nginx replaced the client's X-Forwarded-For with the address it saw.
    (line,) = [line for line in log.splitlines() if '"GET /c//x ' in line]
    assert ' "127.0.0.1" ' in line and "203.0.113.9" not in line
