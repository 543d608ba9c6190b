"""The package's shape, checked: data access is the only code that talks to DynamoDB and SQS
(and the only code that knows the table records), business logic knows no HTTP, the
domain types depend on nothing of ours, and the Lambda layer imports no operator tool."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "layers" / "common" / "retail_pulse"
ADMIN = ROOT / "admin" / "retail_pulse_admin"
AWS_LIBRARIES = ("pynamodb", "boto3", "botocore")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def _offending(paths: list[Path], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    found = {}
    for path in paths:
        bad = sorted(
            name for name in _imports(path) if name.split(".")[0] in forbidden or name in forbidden
        )
        bad += sorted(n for n in _imports(path) if any(n.startswith(f + ".") for f in forbidden))
        if bad:
            found[str(path.relative_to(PACKAGE))] = sorted(set(bad))
    return found


@pytest.mark.parametrize("folder", ["jobs", "visits", "imaging", "api", "net", "webhooks"])
def test_only_data_access_touches_the_tables(folder: str) -> None:
    """Records and connections are private to retail_pulse.data."""
    assert _offending(_modules(folder), ("retail_pulse.data.models", "pynamodb")) == {}


@pytest.mark.parametrize("folder", ["jobs", "visits"])
def test_business_logic_knows_no_http_and_no_aws_library(folder: str) -> None:
    """Use cases raise retail_pulse.errors; api/ alone maps them to statuses."""
    assert _offending(_modules(folder), ("retail_pulse.api", *AWS_LIBRARIES)) == {}


def test_the_data_layer_does_not_know_it_is_metered() -> None:
    """Metering is observability's opt-in part (lambda_entry enables it): it watches the
    clients data/aws.py builds; the data layer does not import it (it logs, nothing more),
    and observability reaches no data access."""
    assert _offending(_modules("data"), ("retail_pulse.metering",)) == {}
    assert _offending([PACKAGE / "observability.py"], ("retail_pulse.data",)) == {}
    assert _offending([PACKAGE / "metering.py"], ("retail_pulse.data",)) == {
        "metering.py": ["retail_pulse.data.aws"]
    }


def test_the_domain_types_depend_on_nothing_of_ours() -> None:
    """domain.py, failure_summary.py (a failed job's failures, as domain types) and errors.py
    import nothing else of ours."""
    domain = ("domain.py", "failure_summary.py", "errors.py")
    imports = set().union(*(_imports(PACKAGE / name) for name in domain))
    ours = {"retail_pulse." + name.removesuffix(".py") for name in domain}
    assert not {name for name in imports if name.startswith("retail_pulse")} - ours
    assert not {name for name in imports if name.split(".")[0] in AWS_LIBRARIES}


def test_the_layer_and_the_functions_import_no_operator_tool() -> None:
    """`sam build` ships layers/common and functions/ only: an import of retail_pulse_admin
    there would fail in Lambda."""
    paths = sorted(PACKAGE.rglob("*.py")) + sorted((ROOT / "functions").rglob("*.py"))
    assert paths
    found = {
        str(path.relative_to(ROOT)): sorted(
            name for name in _imports(path) if name.split(".")[0] == "retail_pulse_admin"
        )
        for path in paths
    }
    assert {path: names for path, names in found.items() if names} == {}


def test_the_operator_tools_reach_aws_only_through_their_gateway_module() -> None:
    """In the admin package, only api_keys talks to API Gateway and CloudFormation; the store
    import writes through the service's data access."""
    others = [path for path in sorted(ADMIN.rglob("*.py")) if path.name != "api_keys.py"]
    assert others
    offending = {
        str(path.relative_to(ADMIN)): names
        for path in others
        if (names := sorted(n for n in _imports(path) if n.split(".")[0] in AWS_LIBRARIES))
    }
    assert offending == {}


def test_the_net_package_imports_nothing_else_of_ours() -> None:
    """net/ is the outbound-HTTP safety the image fetch and the webhook POST share: it knows
    no data access, no use case, no settings, and neither of its callers."""
    paths = _modules("net")
    assert paths
    found = {
        str(path.relative_to(PACKAGE)): sorted(
            name
            for name in _imports(path)
            if name.split(".")[0] == "retail_pulse" and not name.startswith("retail_pulse.net")
        )
        for path in paths
    }
    assert {path: names for path, names in found.items() if names} == {}
    assert _offending(paths, ("retail_pulse.data", "retail_pulse.jobs", *AWS_LIBRARIES)) == {}
