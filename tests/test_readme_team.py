"""README's "Deploying for a team", run as written: each mode's settings start the app, and the
local-accounts block's command makes an admin who then signs in and reaches the admin page."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.live_server import ROOT, clean_environment

SECTION = re.search(r"^## Deploying for a team\n(.*?)^## ", (ROOT / "README.md").read_text(), re.M | re.S)
assert SECTION, "README.md has no section 'Deploying for a team'"
BLOCKS = re.findall(r"^```(env|sh)\n(.*?)^```", SECTION[1], re.M | re.S)
SETTINGS = [body for kind, body in BLOCKS if kind == "env"]
COMMANDS = [body for kind, body in BLOCKS if kind == "sh"]

# In a fresh folder with the block as its .env: the app starts, and says which mode it is in.
STARTS = textwrap.dedent("""
    import asyncio
    from chatapp import create_app
    app = create_app()
    print(app.config["CHATAPP"].auth)
""")

# The admin the README's command made signs in, and the admin page greets them.
SIGNS_IN = textwrap.dedent("""
    import asyncio, re, sys
    from chatapp import create_app

    async def main():
        app = create_app()
        async with app.test_app():
            client = app.test_client()
            page = await (await client.get("/sign-in")).get_data(as_text=True)
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)[1]
            response = await client.post("/sign-in", form={"name": sys.argv[1], "password": sys.argv[2],
                                                           "csrf_token": csrf})
            admin = await client.get("/admin")
            print(response.status_code, admin.status_code)

    asyncio.run(main())
""")


def _run(folder: Path, *command: str, **options: object) -> subprocess.CompletedProcess[str]:
    environment = {**clean_environment(), "PYTHONPATH": str(ROOT),
                   "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(command, cwd=folder, env=environment, capture_output=True, text=True, timeout=120,
                          **options)  # type: ignore[call-overload]


def test_the_section_shows_every_mode() -> None:
    modes = [re.search(r"^CHATAPP_AUTH=(\w+)$", block, re.M)[1] for block in SETTINGS]  # type: ignore[index]
    assert modes == ["none", "passphrase", "accounts", "header", "oidc"]
    assert [command.split("chatapp ")[1].split()[0] for command in COMMANDS] == ["create-admin", "make-admin"]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda block: block.split("\n")[0])
def test_each_modes_settings_start_the_app_as_written(tmp_path: Path, settings: str) -> None:
    (tmp_path / ".env").write_text(settings)
    result = _run(tmp_path, sys.executable, "-c", STARTS)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == re.search(r"^CHATAPP_AUTH=(\w+)$", settings, re.M)[1]  # type: ignore[index]


def test_the_local_accounts_block_makes_an_admin_who_signs_in(tmp_path: Path) -> None:
    accounts = next(block for block in SETTINGS if "CHATAPP_AUTH=accounts" in block)
    (tmp_path / ".env").write_text(accounts)
    command = COMMANDS[0]
    made = _run(tmp_path, "bash", "-c", command)
    assert made.returncode == 0, made.stderr
    name = re.search(r"--name (\S+)", command)[1]  # type: ignore[index]
    password = re.search(r"'([^']+)' \|", command)[1]  # type: ignore[index]
    signed_in = _run(tmp_path, sys.executable, "-c", SIGNS_IN, name, password)
    assert signed_in.returncode == 0, signed_in.stderr
    assert signed_in.stdout.split() == ["303", "200"]


# A person the proxy named signs in once, as the header mode does.
PROXY_NAMES = textwrap.dedent("""
    import asyncio, sys
    from chatapp import create_app

    async def main():
        app = create_app()
        async with app.test_app():
            client = app.test_client()
            response = await client.get("/admin", headers={"X-Forwarded-User": sys.argv[1]},
                                        scope_base={"client": ("127.0.0.1", 40000)})
            print(response.status_code)

    asyncio.run(main())
""")


def test_the_first_admin_of_the_proxy_mode_as_written(tmp_path: Path) -> None:
    """The header mode's settings; its person signs in once (the test client connects from
    127.0.0.1, the block's trusted proxy); then the block's make-admin makes them an admin."""
    header = next(block for block in SETTINGS if "CHATAPP_AUTH=header" in block)
    (tmp_path / ".env").write_text(header)
    command = COMMANDS[1]
    name = re.search(r"--name (\S+)", command)[1]  # type: ignore[index]
    before = _run(tmp_path, sys.executable, "-c", PROXY_NAMES, name)
    assert (before.returncode, before.stdout.strip()) == (0, "403"), before.stderr  # signed in, not an admin yet
    made = _run(tmp_path, "bash", "-c", command)
    assert made.returncode == 0, made.stderr
    after = _run(tmp_path, sys.executable, "-c", PROXY_NAMES, name)
    assert after.stdout.strip() == "200", after.stderr
