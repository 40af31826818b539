"""schemathesis runs the whole API against the document it serves (a throwaway project,
bounded examples, no deadlines): no 5xx, every answer as documented."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from kit.project import Project
from kit.triggers import Api, add_triggered_campaign, serve_api
from schemathesis.checks import positive_data_acceptance

from engine.web.api_openapi import openapi_document

schema = schemathesis.openapi.from_dict(openapi_document())


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    root: Path = tmp_path_factory.mktemp("schemathesis")
    project = Project(root, f"sqlite:///{root}/tailormail.db")
    add_triggered_campaign(project)
    engine = project.engine(api={"rate_limit_per_second": 1e6})
    project.seed(engine, people=8)
    with serve_api(engine) as served:
        yield served


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_the_api_answers_as_its_document_says(case: schemathesis.Case, api: Api) -> None:
    # A request valid by the schema may still be refused for what only the database
    # knows (an unknown recipient or item, data a template needs): 422, documented.
    case.call_and_validate(
        base_url=api.server.url,
        headers=api.headers(),
        excluded_checks=[positive_data_acceptance],
    )
