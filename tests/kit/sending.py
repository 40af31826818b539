"""A campaign sent for real over SMTP: ``smtp_project`` points a project at a local SMTP
server, ``start_send`` runs ``tailormail send`` in its own process.
"""

from __future__ import annotations

import os
import subprocess
import sys

from engine.app import Engine
from kit.project import ROOT, Project

CONNECTIONS = 4  # the smtp backend's pool: at most this many messages in flight
DEADLINE = 120.0  # seconds; only a hang gets near it


def smtp_project(project: Project, port: int, people: int, pool: int = CONNECTIONS) -> Engine:
    (project.root / "config" / "tailormail.toml").write_text(
        f'database_url = "{project.db_url}"\n'
        'from_address = "alerts@example.com"\n'
        "[delivery]\n"
        'backend = "smtp"\n'
        "batch_size = 100\n"
        "[delivery.smtp]\n"
        f'host = "127.0.0.1"\nport = {port}\npool_size = {pool}\n'
    )
    engine = project.engine(backend="smtp", delivery={"options": {"smtp": {"port": port}}})
    project.seed(engine, people=people)
    return engine


def start_send(project: Project, *run: str) -> subprocess.Popen[bytes]:
    """``tailormail send alerts`` in its own process (``run``: --new-run ID or --run ID)."""
    env = dict(
        os.environ, TAILORMAIL_SECRET="test-secret-0123456789-0123456789-01", PYTHONPATH=str(ROOT)
    )
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "send", "alerts", *run, "-p", str(project.root)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
