"""The README's tour, as a new user runs it: init, import, send, serve, click, report."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tailormail(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def env() -> dict[str, str]:
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TAILORMAIL_")}
    return clean | {
        "COLUMNS": "200",
        "TAILORMAIL_TRACKING_BASE_URL": f"http://127.0.0.1:{port}",
        "TAILORMAIL_WEB__PORT": str(port),
    }


def test_the_readme_tour(tmp_path: Path, env: dict[str, str]) -> None:
    project = tmp_path / "alerts"
    done = tailormail("init", str(project), cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert (project / "config" / "campaigns" / "weekly-picks.toml").is_file()

    for kind, name in (
        ("recipients", "people.csv"),
        ("items", "items.csv"),
        ("interactions", "interactions.csv"),
    ):
        done = tailormail("import", kind, name, cwd=project, env=env)
        assert done.returncode == 0, done.stderr
        assert "Imported" in done.stdout

    done = tailormail("send", "weekly-picks", cwd=project, env=env)
    assert done.returncode == 0, done.stderr
    counts = re.search(r"│\s+40\s+│\s+0\s+│\s+0\s+│\s+0\s+│\s+40\s+│\s+0\s+│", done.stdout)
    assert counts, done.stdout  # audience, already done, retried, skipped, sent, deferred
    messages = sorted((project / "outbox").glob("*.eml"))
    assert len(messages) == 40

    port = env["TAILORMAIL_WEB__PORT"]
    server = subprocess.Popen(
        [sys.executable, "-m", "engine", "serve", "--host", "127.0.0.1", "--port", port],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = env["TAILORMAIL_TRACKING_BASE_URL"]
        for _ in range(100):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("tailormail serve did not answer /health")
        shown = tailormail("outbox", "--newest", "1", cwd=project, env=env)
        assert shown.returncode == 0, shown.stderr
        link = re.search(rf"({re.escape(base)}/c/\S+)", shown.stdout)
        assert link, shown.stdout
        answer = httpx.get(
            link.group(1),
            follow_redirects=False,
            timeout=5,
            headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"},
        )
        assert answer.status_code == 302
        assert answer.headers["location"].startswith("https://shop.example.com/items/")
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=20)

    done = tailormail("report", "weekly-picks", cwd=project, env=env)
    assert done.returncode == 0, done.stderr
    rows = [
        line for line in done.stdout.splitlines() if re.match(r"│ (plain|visual|digest) ", line)
    ]
    assert len(rows) == 3
    clicks = sum(int(line.split("│")[3]) for line in rows)
    sends = sum(int(line.split("│")[2]) for line in rows)
    assert (sends, clicks) == (40, 1)


def test_a_bad_import_file_exits_non_zero_and_names_the_row(
    tmp_path: Path, env: dict[str, str]
) -> None:
    project = tmp_path / "alerts"
    assert tailormail("init", str(project), cwd=tmp_path, env=env).returncode == 0
    (project / "bad.csv").write_text("id,email\nu1,a@example.com\nu2,not-an-email\n")
    done = tailormail("import", "recipients", "bad.csv", cwd=project, env=env)
    assert done.returncode == 2
    assert "row 3" in done.stderr and "email" in done.stderr


def test_a_bad_config_key_exits_non_zero_and_names_the_key(
    tmp_path: Path, env: dict[str, str]
) -> None:
    project = tmp_path / "alerts"
    assert tailormail("init", str(project), cwd=tmp_path, env=env).returncode == 0
    config = project / "config" / "tailormail.toml"
    config.write_text(config.read_text().replace("from_address", "from_adress"))
    done = tailormail("send", "weekly-picks", cwd=project, env=env)
    assert done.returncode == 2
    assert "unknown key 'from_adress'" in done.stderr
