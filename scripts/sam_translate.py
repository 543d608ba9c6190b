"""Print template.yaml as CloudFormation receives it: LanguageExtensions expanded, then the
SAM transform applied, both by the libraries the SAM CLI bundles (run it with the SAM CLI's
interpreter, `.venv-sam/bin/python scripts/sam_translate.py [TEMPLATE]`).

What SAM adds on its own (generated roles, managed policies for event sources, permissions)
is only visible here, so the least-privilege test reads this output, not the source.
Offline: managed policy names are not looked up (the template names none; SAM's own
additions are ARNs it builds itself).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from samcli.yamlhelper import yaml_parse
from samtranslator.translator.transform import transform

# Run by the SAM CLI's interpreter, which has PyYAML but not this project installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from local_stack.template import decide_fn_if_in_sam_resources, make_resolver


class _NoManagedPolicyNames:
    """The loader SAM asks for policy names written as bare names; this template uses ARNs."""

    def load(self) -> dict[str, str]:
        return {}


def translate(template_path: Path) -> dict[str, Any]:
    template = yaml_parse(template_path.read_text())
    _resolve_conditions_in_sam_resources(template)
    _stand_in_for_uploaded_code(template)
    return transform(template, {}, _NoManagedPolicyNames())  # type: ignore[arg-type]


def _resolve_conditions_in_sam_resources(template: dict[str, Any]) -> None:
    """What AWS::LanguageExtensions does before SAM reads the template, with the parameters'
    defaults (what `sam deploy` uses unless told otherwise), by the local stack's evaluator.
    The SAM CLI's own expansion is not used: it also turns every `Fn::Sub` into a plain
    string, which would hide what the template really grants."""
    if not isinstance(template.get("Transform"), list):
        return
    template["Transform"] = [t for t in template["Transform"] if t != "AWS::LanguageExtensions"]
    decide_fn_if_in_sam_resources(template, make_resolver(template))


def _stand_in_for_uploaded_code(template: dict[str, Any]) -> None:
    """SAM wants code in S3, as `sam deploy` leaves it; local folders get a stand-in URI
    (what `sam validate` does too). Nothing here reads the code."""
    uri_property = {
        "AWS::Serverless::Function": "CodeUri",
        "AWS::Serverless::LayerVersion": "ContentUri",
    }
    for resource in template.get("Resources", {}).values():
        name = uri_property.get(resource.get("Type"))
        properties = resource.get("Properties") or {}
        if name and isinstance(properties.get(name), str) and "://" not in properties[name]:
            properties[name] = f"s3://local-code/{properties[name]}"


if __name__ == "__main__":
    # SAM needs a region to build ARNs; the grants do not depend on which.
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("template.yaml")
    json.dump(translate(path), sys.stdout, indent=1, default=str)
