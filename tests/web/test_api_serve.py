"""Where the API listens: its own process and port beside ``tailormail serve`` (the
default), or the tracking server's port (``[api] mode = "same_port"``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
from kit.project import ROOT, TEST_SECRET, Project, toml_text
from kit.smtp import free_port
from kit.triggers import add_triggered_campaign, drop

from engine.api_keys import create_key
from engine.web import BackgroundServer


def _wait(url: str, child: subprocess.Popen[str] | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and child.poll() is not None:
            raise AssertionError(f"serve exited: {child.communicate()[0]}")
        try:
            if httpx.get(url, timeout=2, trust_env=False).is_success:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer")


def test_serve_starts_the_api_on_its_own_port(sqlite_project: Project) -> None:
    add_triggered_campaign(sqlite_project)
    web, api = free_port(), free_port()
    settings = {"database_url": sqlite_project.db_url, "delivery": {"backend": "null"}}
    settings |= {"api": {"port": api}}
    (sqlite_project.root / "config" / "tailormail.toml").write_text(toml_text(settings))
    env = os.environ | {"TAILORMAIL_SECRET": TEST_SECRET, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-m", "engine", "serve", "--port", str(web), "--no-scheduler"]
        + ["-p", str(sqlite_project.root)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait(f"http://127.0.0.1:{web}/health", child)
        _wait(f"http://127.0.0.1:{api}/v1/health", child)
        on_web = httpx.get(f"http://127.0.0.1:{web}/v1/health", trust_env=False)
        assert on_web.status_code == 404  # not on the tracking server's port
    finally:
        child.send_signal(signal.SIGTERM)
        output = child.communicate(timeout=60)[0]
    assert child.returncode == 0, output
    assert f"API on http://127.0.0.1:{api}/v1" in output
    try:
        httpx.get(f"http://127.0.0.1:{api}/v1/health", timeout=2, trust_env=False)
    except httpx.ConnectError:
        pass  # stopped with serve
    else:
        raise AssertionError("the API process outlived serve")


def test_same_port_serves_the_api_from_the_tracking_server(sqlite_project: Project) -> None:
    add_triggered_campaign(sqlite_project)
    engine = sqlite_project.engine(api={"mode": "same_port"})
    sqlite_project.seed(engine, people=4)
    _, key = create_key(engine.db, "app", ["trigger", "read"])
    with BackgroundServer(engine) as server:
        headers = {"Authorization": f"Bearer {key}"}
        answer = httpx.post(
            f"{server.url}/v1/campaigns/pricedrop/trigger",
            json=drop("u001"),
            headers=headers,
            trust_env=False,
        )
        assert answer.status_code == 202, answer.text
        trigger = answer.json()["trigger_id"]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            read = httpx.get(
                f"{server.url}/v1/triggers/{trigger}", headers=headers, trust_env=False
            )
            if read.json()["status"] == "sent":
                break
            time.sleep(0.05)
        assert read.json()["status"] == "sent"
        assert httpx.get(f"{server.url}/health", trust_env=False).status_code == 200
