"""The deployed run's clean-up (what it leaves in the temporary folder, and that it does not
wait for it), the command it runs beside its tests, and the botocore models it leaves out of
the built layer."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from deployed.run import (
    TEMPLATE,
    Beside,
    remove_in_background,
    services_the_functions_may_call,
    trim_botocore_models,
    wait_for,
)
from local_stack.sam import translated


def test_a_work_folder_is_deleted_by_a_process_of_its_own(tmp_path: Path) -> None:
    folder = tmp_path / "retail-pulse-deployed-x" / "ministack-tmp"
    (folder / "layer" / "python").mkdir(parents=True)
    for n in range(200):
        (folder / "layer" / "python" / f"{n}.py").write_text("x = 1\n")
    kept = tmp_path / "retail-pulse-deployed-x" / "ministack.log"
    kept.write_text("log\n")

    remove_in_background(folder)

    wait_for("the folder deleted", lambda: not folder.exists(), timeout_s=120)
    assert kept.read_text() == "log\n"  # only the folder named goes


def test_a_command_beside_the_tests_gives_its_output_and_its_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = "import sys; print('local e2e: 1 failed'); sys.exit(3)"
    beside = Beside.start(f'{sys.executable} -c "{script}"', tmp_path)

    assert beside.finish() == 3  # so the run fails when it fails
    assert "local e2e: 1 failed" in capsys.readouterr().out


def test_stopping_the_command_beside_stops_what_it_started(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    beside = Beside.start(f"sh -c 'sleep 600 & echo $! > {pid_file}; wait'", tmp_path)
    wait_for(
        "the grandchild started",
        lambda: pid_file.exists() and pid_file.read_text().strip() != "",
        timeout_s=30,
    )
    grandchild = int(pid_file.read_text())

    beside.stop()

    assert beside.process.poll() is not None

    def gone() -> bool:  # no such process, or one dead and not yet reaped
        try:
            stat = Path(f"/proc/{grandchild}/stat").read_text()
        except FileNotFoundError:
            return True
        return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")

    wait_for("the grandchild gone", gone, timeout_s=30)


def test_the_models_kept_are_those_of_the_services_the_roles_allow() -> None:
    template = translated(TEMPLATE)

    # Inline policies: the service's own data; managed: Lambda's logs and X-Ray.
    assert services_the_functions_may_call(template) == {
        "dynamodb",
        "sqs",
        "s3",
        "events",
        "secretsmanager",
        "logs",
        "xray",
    }


@pytest.mark.parametrize(
    "role",
    [
        {"ManagedPolicyArns": ["arn:aws:iam::aws:policy/AmazonS3FullAccess"]},
        {"Policies": [{"PolicyDocument": {"Statement": [{"Effect": "Allow", "Action": "*"}]}}]},
    ],
    ids=["a managed policy not named", "any action"],
)
def test_a_role_that_may_call_what_is_not_known_trims_nothing(role: dict[str, object]) -> None:
    template = {"Resources": {"Role": {"Type": "AWS::IAM::Role", "Properties": role}}}

    assert services_the_functions_may_call(template) is None


def test_trimming_leaves_the_allowed_models_and_botocores_own_files(tmp_path: Path) -> None:
    data = tmp_path / "CommonLayer" / "python" / "botocore" / "data"
    for model in ("dynamodb/2012-08-10", "ec2/2016-11-15", "sqs/2012-11-05"):
        (data / model).mkdir(parents=True)
        (data / model / "service-2.json.gz").write_bytes(b"{}")
    (data / "endpoints.json.gz").write_bytes(b"{}")

    assert trim_botocore_models(tmp_path, {"dynamodb", "sqs", "xray"}) == ["dynamodb", "sqs"]
    assert sorted(p.name for p in data.iterdir()) == ["dynamodb", "endpoints.json.gz", "sqs"]
    assert trim_botocore_models(tmp_path, None) is None
