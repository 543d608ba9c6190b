"""Print (or, with --write, save) openapi.json: the OpenAPI document of every HTTP function.

Every functions/<name>/app.py that defines a Powertools `router` is included, so a new
function's routes are documented without touching this script.

    .venv/bin/python scripts/openapi.py --write     # or: make openapi
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tomllib
from pathlib import Path
from types import ModuleType

from aws_lambda_powertools.event_handler.router import Router
from cfnlint.decode import decode

from retail_pulse.api.openapi import build_openapi, render

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ROOT / "functions"
OUTPUT = ROOT / "openapi.json"


def load_function(name: str) -> ModuleType:
    """functions/<name>/app.py under the module name the tests use, loaded once."""
    module_name = f"functions_{name}_app"
    if module_name in sys.modules:
        return sys.modules[module_name]
    # A function validates its settings when imported (retail_pulse.entry); the document
    # does not depend on them, so stand-in names do where the environment has none.
    for variable in (
        "JOBS_TABLE",
        "IMAGES_TABLE",
        "STORES_TABLE",
        "IDEMPOTENCY_TABLE",
        "WEBHOOK_SECRETS_TABLE",
        "UPLOADS_TABLE",
        "EXPORTS_TABLE",
    ):
        os.environ.setdefault(variable, variable.removesuffix("_TABLE").title())
    os.environ.setdefault("IMAGE_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/0/Images")
    os.environ.setdefault("EXPRESS_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/0/Express")
    os.environ.setdefault("PAGE_TOKEN_SECRET_ARN", "PageTokenSecret")
    os.environ.setdefault("WEBHOOK_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/0/Webhooks")
    os.environ.setdefault("UPLOADS_BUCKET", "uploads")
    os.environ.setdefault("INGEST_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/0/Ingest")
    os.environ.setdefault("EXPORT_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/0/Export")
    spec = importlib.util.spec_from_file_location(module_name, FUNCTIONS / name / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def routers() -> list[Router]:
    """The router of every function that has one, in function-name order."""
    found = []
    for app in sorted(FUNCTIONS.glob("*/app.py")):
        router = getattr(load_function(app.parent.name), "router", None)
        if isinstance(router, Router):
            found.append(router)
    return found


def template_routes() -> list[tuple[str, str]]:
    """(METHOD, path) of every Api event in template.yaml: what API Gateway serves."""
    template, errors = decode(str(ROOT / "template.yaml"))
    if errors or template is None:
        raise SystemExit(f"template.yaml does not parse: {errors}")
    routes = []
    for resource in template["Resources"].values():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        for event in resource["Properties"].get("Events", {}).values():
            if event.get("Type") == "Api":
                routes.append((event["Properties"]["Method"].upper(), event["Properties"]["Path"]))
    return routes


def version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def generate() -> str:
    return render(build_openapi(routers(), version(), template_routes()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {OUTPUT.name}")
    args = parser.parse_args(argv)
    text = generate()
    if args.write:
        OUTPUT.write_text(text, encoding="utf-8")
        print(f"wrote {OUTPUT.relative_to(ROOT)}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
