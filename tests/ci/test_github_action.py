"""The composite action (action.yml): inputs reach its script only through env:, every input the
script reads is declared, npm @action-validator/cli accepts it, and the script run as the runner runs
it (inputs in env, GITHUB_OUTPUT and GITHUB_STEP_SUMMARY files) against a real devnet gives the gate's
answer. GitHub's runner itself is not run here: `${{ inputs.x }}` is substituted as it would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support import ENV, unique

ROOT = Path(__file__).resolve().parents[2]
ACTION = ROOT / "action.yml"
SCRIPT = ROOT / "ci" / "github" / "gate.sh"
VALIDATOR = ROOT / "node_modules" / ".bin" / "action-validator"


def action() -> dict:
    return yaml.safe_load(ACTION.read_text())


def env_name(input_name: str) -> str:
    return "INPUT_" + input_name.upper().replace("-", "_")


def test_inputs_reach_the_script_only_through_env_and_each_is_declared():
    document = action()
    declared = set(document["inputs"])
    steps = document["runs"]["steps"]
    mapped = {}
    for step in steps:
        assert "${{" not in step["run"], f"an expression inside run: of {step['name']!r}"
        for name, value in (step.get("env") or {}).items():
            match = re.fullmatch(r"\$\{\{ inputs\.([\w-]+) \}\}", value)
            assert match and match.group(1) in declared, f"{name}: {value!r} is not a declared input"
            assert name == env_name(match.group(1))
            mapped[name] = match.group(1)
    used = set(re.findall(r"INPUT_[A-Z_]+", SCRIPT.read_text())) | {
        n for s in steps for n in re.findall(r"INPUT_[A-Z_]+", s["run"])}
    assert used <= set(mapped), f"the script reads inputs no step maps: {used - set(mapped)}"
    assert {env_name(i) for i in declared} == set(mapped), "a declared input is never used"
    assert set(document["outputs"]) == {"allowed", "reason", "message"}


def test_action_validator_accepts_it_and_refuses_a_broken_one(tmp_path):
    assert VALIDATOR.exists(), "npm ci installs @action-validator/cli"
    result = subprocess.run([str(VALIDATOR), str(ACTION)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = action()
    broken["runs"]["using"] = "composite-ish"
    (tmp_path / "action.yml").write_text(yaml.safe_dump(broken))
    assert subprocess.run([str(VALIDATOR), str(tmp_path / "action.yml")], capture_output=True, timeout=60).returncode != 0


def outputs_of(path: Path) -> dict:
    """GITHUB_OUTPUT as the runner reads it: name=value lines and name<<DELIMITER blocks."""
    lines, found = path.read_text().splitlines(), {}
    i = 0
    while i < len(lines):
        if "<<" in lines[i]:
            name, delimiter = lines[i].split("<<", 1)
            end = lines.index(delimiter, i + 1)
            found[name] = "\n".join(lines[i + 1:end])
            i = end + 1
        else:
            name, _, value = lines[i].partition("=")
            found[name] = value
            i += 1
    return found


@pytest.fixture
def run_step(dn, tmp_path):
    [step] = [s for s in action()["runs"]["steps"] if s.get("id") == "gate"]

    def run(**inputs):
        document = action()
        given = {name: str(inputs.get(name.replace("-", "_"), spec.get("default", ""))) for name, spec in document["inputs"].items()}
        env = {k: given[re.search(r"inputs\.([\w-]+)", v).group(1)] for k, v in step["env"].items()}
        out, summary = tmp_path / "output", tmp_path / "summary"
        out.write_text(""), summary.write_text("")
        env.update(PATH=os.environ["PATH"], HOME=str(tmp_path), PYTHONPATH=str(ROOT), SHIPLEDGER_PYTHON=sys.executable,
                   GITHUB_ACTION_PATH=str(ROOT), GITHUB_OUTPUT=str(out), GITHUB_STEP_SUMMARY=str(summary))
        result = subprocess.run(["bash", "-c", step["run"]], cwd=dn.workdir, env=env, capture_output=True, text=True, timeout=120)
        return result, outputs_of(out), summary.read_text()

    return run


def test_the_step_gives_the_gates_answer(dn, run_step, tmp_path):
    service = unique()
    allowed = dn.release(service)
    common = dict(service=service, environment=ENV, rpc_url=dn.rpc_url, deployment=str(dn.book))
    result, outputs, summary = run_step(digest=allowed, **common)
    assert result.returncode == 0, result.stderr
    assert (outputs["allowed"], outputs["reason"]) == ("true", "allowed")
    assert "the gate allows it" in outputs["message"] and "shipledger gate: allowed" in summary

    waiting = dn.register(service, "2.0.0")
    result, outputs, summary = run_step(image=f"registry.example.com/shop/{service}@{waiting}", **common)
    assert result.returncode == 3
    assert (outputs["allowed"], outputs["reason"]) == ("false", "not_enough_approvals")
    assert "not enough approvals" in outputs["message"] and "::error" in result.stdout and "denied" in summary

    result, outputs, _ = run_step(image=f"registry.example.com/shop/{service}:2.0.0", **common)
    assert result.returncode == 2 and "a tag can move" in result.stdout and outputs == {}

    # an input is data, never shell: the CLI refuses the name and nothing runs
    marker = tmp_path / "pwned"
    result, outputs, _ = run_step(digest=allowed, **{**common, "service": f"$(touch {marker})"})
    assert result.returncode == 2 and not marker.exists() and outputs["allowed"] == "false"

    result, outputs, _ = run_step(digest=allowed, image=f"r.example/x@{allowed}", **common)
    assert result.returncode == 2 and "exactly one" in result.stdout
