"""template.yaml as CloudFormation receives it: AWS::LanguageExtensions' `Fn::If`s decided,
then SAM's own translator (aws-sam-translator, the library `sam deploy` runs) applied.

The local stack reads this, not the SAM source, so what SAM generates (event source
mappings, the REST API's OpenAPI body, its usage plan, roles, permissions) is what runs;
the least-privilege test reads the same output, so what SAM grants on its own is checked.
Translation uses the parameters' defaults (what `sam deploy` uses unless told otherwise):
an override changes the values the Resolver puts in, not which resources SAM makes.
Offline: managed policy names are not looked up (the template names none; SAM's own
additions are ARNs it builds itself). The result is cached in .cache/sam/ by the
template's text and the translator's version: translating takes a second or two.
"""

from __future__ import annotations

import copy
import hashlib
import json
from importlib.metadata import version
from pathlib import Path
from typing import Any

from local_stack import template as template_module
from local_stack.template import REGION, decide_fn_if_in_sam_resources, make_resolver

CACHE = Path(__file__).resolve().parents[1] / ".cache" / "sam"
# Code in S3, as `sam deploy` leaves it; SAM refuses a local folder. Nothing reads it: the
# local stack maps it back to the folder (code_folder).
CODE_BUCKET = "local-code"
_CODE_URI = {
    "AWS::Serverless::Function": "CodeUri",
    "AWS::Serverless::LayerVersion": "ContentUri",
}


class _NoManagedPolicyNames:
    """The loader SAM asks for policy names written as bare names; this template uses ARNs."""

    def load(self) -> dict[str, str]:
        return {}


def translate(template: dict[str, Any]) -> dict[str, Any]:
    """The CloudFormation template SAM makes of `template` (loaded by load_template)."""
    import boto3
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator
    from samtranslator.utils.py27hash_fix import (
        to_py27_compatible_template,
        undo_mark_unicode_str_in_template,
    )

    template = copy.deepcopy(template)
    _decide_language_extensions(template)
    _stand_in_for_uploaded_code(template)
    # As samtranslator's transform() does, with a session in REGION: SAM builds ARNs with
    # the session's region (the grants do not depend on which).
    parameters: dict[str, Any] = {}
    to_py27_compatible_template(template, parameters)
    translator = Translator(None, Parser(), boto_session=boto3.Session(region_name=REGION))
    translated = translator.translate(
        template, parameter_values=parameters, get_managed_policy_map=_NoManagedPolicyNames().load
    )
    result: dict[str, Any] = undo_mark_unicode_str_in_template(translated)
    return result


def translate_cached(template: dict[str, Any]) -> dict[str, Any]:
    """`translate(template)`, from .cache/sam/ when this template was translated before by
    this translator and this code (this module and the evaluator it uses)."""
    digest = hashlib.sha256(version("aws-sam-translator").encode())
    for module in (Path(__file__), Path(template_module.__file__ or "")):
        digest.update(module.read_bytes())
    digest.update(json.dumps(template, sort_keys=True, default=str).encode())
    key = digest.hexdigest()
    path = CACHE / f"{key[:32]}.json"
    if path.exists():
        cached: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return cached
    translated = translate(template)
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{key[32:40]}.tmp")
    partial.write_text(json.dumps(translated), encoding="utf-8")
    partial.replace(path)  # whole or absent, whoever else translates at the same time
    return translated


def _decide_language_extensions(template: dict[str, Any]) -> None:
    """What AWS::LanguageExtensions does before SAM reads the template, by the local stack's
    evaluator. The SAM CLI's own expansion is not used: it also turns every `Fn::Sub` into a
    plain string, which would hide what the template really grants."""
    if not isinstance(template.get("Transform"), list):
        return
    template["Transform"] = [t for t in template["Transform"] if t != "AWS::LanguageExtensions"]
    decide_fn_if_in_sam_resources(template, make_resolver(template))


def _stand_in_for_uploaded_code(template: dict[str, Any]) -> None:
    """A local folder becomes s3://local-code/<folder> (what `sam validate` does too)."""
    for resource in template.get("Resources", {}).values():
        name = _CODE_URI.get(resource.get("Type"))
        properties = resource.get("Properties") or {}
        if name and isinstance(properties.get(name), str) and "://" not in properties[name]:
            properties[name] = f"s3://{CODE_BUCKET}/{properties[name]}"


def code_folder(root: Path, code: Any) -> Path | None:
    """The local folder an AWS::Lambda::Function's Code or LayerVersion's Content stands
    in for, or None when it is not one translate made."""
    if isinstance(code, dict) and code.get("S3Bucket") == CODE_BUCKET:
        return (root / str(code.get("S3Key", ""))).resolve()
    return None


if __name__ == "__main__":  # pragma: no cover - a look at what SAM makes of a template
    import sys

    from local_stack.template import load_template

    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("template.yaml")
    json.dump(translate(load_template(path)), sys.stdout, indent=1)
