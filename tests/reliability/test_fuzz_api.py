"""Fuzz the API from its own OpenAPI document with schemathesis, against gunicorn."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from loops.models import Role
from tests.support.procs import ROOT

pytestmark = pytest.mark.slow

CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance,response_headers_conformance"
)
# CI default; `make reliability` and the report's run use more (FUZZ_MAX_EXAMPLES).
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "60"))
SEED = os.environ.get("FUZZ_SEED", "20261127")


def _seed_data(make: Any) -> str:
    admin = make.user(email="admin@example.com", role=Role.ADMIN)
    make.member(admin, make.org(slug="acme", name="Acme"))
    for feature in ("mention", "digest", "comment"):
        make.notification(admin, feature=feature)
    make.user(email="reader@example.com")
    return str(make.token(admin))


def test_schemathesis_finds_no_5xx_and_no_schema_violation(
    app: Flask, make: Any, gunicorn: Any, database_url: str, tmp_path: Path
) -> None:
    token = _seed_data(make)
    server = gunicorn({"DATABASE_URL": database_url}, workers=2, threads=4)
    report = tmp_path / "schemathesis.ndjson"
    config = tmp_path / "schemathesis.toml"
    # Real identifiers, so generated requests get past 404 into the code behind it.
    config.write_text('[parameters]\n"body.user_email" = "reader@example.com"\n')
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config),
        "run",
        f"{server.url}/api/v1/openapi.json",
        "--checks",
        CHECKS,
        "--header",
        f"Authorization: Bearer {token}",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--generation-database",
        "none",
        "--request-timeout",
        "30",
        "--workers",
        "2",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(report),
        "--no-color",
    ]
    if SEED:
        command += ["--seed", SEED]
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=900, env=dict(os.environ)
    )
    output = result.stdout + result.stderr
    cases = _count_cases(report)
    print(f"\nRELIABILITY schemathesis cases={cases} exit={result.returncode}")
    print(output[-3000:])
    assert result.returncode == 0, output[-6000:]
    assert "event=unhandled_error" not in server.log(), server.log()[-4000:]
    assert cases >= 100


def _count_cases(report: Path) -> int:
    """Test cases run (each one request and its checks), from the ndjson event stream."""
    if not report.exists():
        return 0
    total = 0
    for line in report.read_text().splitlines():
        event = json.loads(line)
        for payload in event.values():
            if isinstance(payload, dict) and "recorder" in payload:
                total += len(payload["recorder"].get("cases", {}))
    return total
