"""template.yaml as CloudFormation receives it: AWS::LanguageExtensions' `Fn::If`s decided,
then SAM's own translator (aws-sam-translator, the library `sam deploy` runs) applied.

The local stack reads this, not the SAM source, so what SAM generates (event source
mappings, the REST API's OpenAPI body, its usage plan, roles, permissions) is what runs;
the least-privilege test reads the same output, so what SAM grants on its own is checked.
Translation uses the parameters' defaults (what `sam deploy` uses unless told otherwise):
an override changes the values the Resolver puts in, not which resources SAM makes.
Offline: managed policy names are not looked up (the template names none; SAM's own
additions are ARNs it builds itself). The result is cached in .cache/sam/ by the
template's text and the translator's version: translating takes a second or two, which
`make run` would otherwise add to every start.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from importlib.metadata import version
from pathlib import Path
from typing import Any

from local_stack import template as template_module
from local_stack.template import (
    REGION,
    TemplateError,
    decide_fn_if_in_sam_resources,
    load_template,
    make_resolver,
)

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
    from samtranslator.model.exceptions import InvalidDocumentException
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
    try:
        translated = translator.translate(
            template,
            parameter_values=parameters,
            get_managed_policy_map=_NoManagedPolicyNames().load,
        )
    except InvalidDocumentException as error:
        causes = "; ".join(cause.message for cause in error.causes)
        raise TemplateError(f"SAM cannot translate the template: {causes}") from error
    finally:
        translator.metrics.publish()  # to SAM's no-op publisher: else it warns at exit
    result: dict[str, Any] = undo_mark_unicode_str_in_template(translated)
    return result


def translated(template_path: Path) -> dict[str, Any]:
    """`translate` of the template at `template_path`, from .cache/sam/ when this text was
    translated before by this translator and this code (this module, the evaluator)."""
    digest = hashlib.sha256(version("aws-sam-translator").encode())
    for source in (Path(__file__), Path(template_module.__file__ or ""), template_path):
        digest.update(source.read_bytes())
    key = digest.hexdigest()
    path = CACHE / f"{key[:32]}.json"
    if path.exists():
        cached: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return cached
    result = translate(load_template(template_path))
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(result), encoding="utf-8")
    partial.replace(path)  # whole or absent, whoever else translates at the same time
    return result


def _decide_language_extensions(template: dict[str, Any]) -> None:
    """What AWS::LanguageExtensions does before SAM reads the template, by the local stack's
    evaluator. The SAM CLI's own expansion is not used: it also turns every `Fn::Sub` into a
    plain string, which would hide what the template really grants."""
    if not isinstance(template.get("Transform"), list):
        return
    template["Transform"] = [t for t in template["Transform"] if t != "AWS::LanguageExtensions"]
    decide_fn_if_in_sam_resources(template, make_resolver(template))


def _stand_in_for_uploaded_code(template: dict[str, Any]) -> None:
    """A local folder becomes s3://local-code/<folder> (what `sam validate` does too), in
    the resources and in Globals."""
    function_globals = (template.get("Globals") or {}).get("Function") or {}
    places = [(function_globals, "CodeUri")] + [
        (resource.get("Properties") or {}, _CODE_URI[resource.get("Type")])
        for resource in template.get("Resources", {}).values()
        if resource.get("Type") in _CODE_URI
    ]
    for properties, name in places:
        if isinstance(properties.get(name), str) and "://" not in properties[name]:
            properties[name] = f"s3://{CODE_BUCKET}/{properties[name]}"


def code_folder(root: Path, code: Any) -> Path | None:
    """The local folder an AWS::Lambda::Function's Code or LayerVersion's Content stands
    in for, or None when it is not one translate made."""
    if isinstance(code, dict) and code.get("S3Bucket") == CODE_BUCKET:
        return (root / str(code.get("S3Key", ""))).resolve()
    return None


if __name__ == "__main__":  # pragma: no cover - a look at what SAM makes of a template
    import sys

    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("template.yaml")
    json.dump(translate(load_template(path)), sys.stdout, indent=1)
