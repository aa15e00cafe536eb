"""Incident suspects (issue 5): `shipledger incident suspects ID` and `incident open --auto-suspect`
against a real devnet and a real index file, plus the scoring rules on hand-built index rows."""

from __future__ import annotations

import json
import math
import re

import pytest
from support import ENV, fails, ok, unique

from shipledger.errors import UsageError
from shipledger.delivery.suspects import (
    AUTO_SUSPECT_FLOOR,
    IncidentFacts,
    Moment,
    Row,
    auto_suspects,
    dependency_hops,
    load_dependencies,
    rank,
)

# ---------------------------------------------------------------------- helpers


def deploy(dn, service: str, version: str = "1.0.0", verdict: tuple[str, float] | None = None) -> int:
    """Release and roll out to 100%, completed (live). With a verdict: start at 10%, record the
    canary verdict, promote to 100%, complete. Returns the deployment id."""
    digest = dn.release(service, version)
    deployer = dn.ledger("deployer")
    if verdict is None:
        deployment_id = deployer.start_deployment(digest, service, ENV, 100)
    else:
        deployment_id = deployer.start_deployment(digest, service, ENV, 10)
        deployer.record_analysis(deployment_id, verdict[1], verdict[0], judge="test")
        if verdict[0] == "marginal":  # suite v2: a marginal canary holds the rollout until a later pass
            deployer.record_analysis(deployment_id, 95.0, "pass", judge="a person who looked")
        deployer.promote(deployment_id, 100)
    deployer.complete(deployment_id)
    return deployment_id


def open_incident(dn, service: str, title: str = "5xx spike") -> int:
    return dn.ledger("responder").open_incident(service, ENV, 2, title)


def deps_file(tmp_path, config: dict) -> str:
    path = tmp_path / "dependencies.yaml"
    path.write_text("".join(f"{service}: [{', '.join(needs)}]\n" for service, needs in config.items()))
    return str(path)


def suspects(dn, tmp_path, incident: int, *extra) -> dict:
    return ok(dn.run("incident", "suspects", incident, "--db", tmp_path / "index.sqlite", "--json", *extra))


def product_of_factors(reasons: list[str]) -> float:
    """100 x every 'xN.NN' a reason ends with: the score the reasons explain."""
    factors = [float(re.search(r": x([0-9.]+)$", r).group(1)) for r in reasons]
    return 100 * math.prod(factors)


# ---------------------------------------------------------------------- the CLI on a devnet


def test_suspects_rank_target_then_dependency_and_never_a_later_deployment(dn, tmp_path):
    web, database = unique("web"), unique("db")
    deps = deps_file(tmp_path, {web: [database]})
    dependency = deploy(dn, database)
    replaced = deploy(dn, web, "1.0.0")
    last = deploy(dn, web, "2.0.0")
    incident = open_incident(dn, web)
    after = deploy(dn, web, "3.0.0")

    out = suspects(dn, tmp_path, incident, "--deps", deps)

    assert out["incident"]["id"] == incident and out["incident"]["service"] == web
    ranked = out["suspects"]
    assert [s["deployment_id"] for s in ranked] == [last, dependency, replaced]
    assert after not in [s["deployment_id"] for s in ranked]
    top, dep, old = ranked
    assert (top["relation"], top["hops"], top["state"], top["verdict"]) == ("same service", 0, "live", "none")
    assert (dep["relation"], dep["hops"], dep["service"]) == ("dependency", 1, database)
    assert old["state"] == "replaced"
    assert any(f"replaced by deployment {last}" in r for r in old["reasons"])
    assert any(f"{database} is a direct dependency of {web}" in r and r.endswith("x0.60") for r in dep["reasons"])
    assert any(r.startswith("no canary verdict recorded") and r.endswith("x1.15") for r in top["reasons"])
    for s in ranked:  # the reasons carry the numbers the score is made of
        assert s["score"] == pytest.approx(product_of_factors(s["reasons"]), rel=0.02)
        assert 0 <= s["seconds_before"] < 600


def test_suspects_without_deps_config_sees_only_the_target(dn, tmp_path):
    web, database = unique("web"), unique("db")
    deploy(dn, database)
    last = deploy(dn, web)
    incident = open_incident(dn, web)

    out = suspects(dn, tmp_path, incident)  # no --deps and no .shipledger/dependencies.yaml in the devnet dir

    assert [s["deployment_id"] for s in out["suspects"]] == [last]


def test_suspects_marginal_canary_outranks_an_otherwise_equal_pass(dn, tmp_path):
    web, cache, queue = unique("web"), unique("cache"), unique("queue")
    deps = deps_file(tmp_path, {web: [cache, queue]})
    marginal = deploy(dn, cache, verdict=("marginal", 80.0))
    passed = deploy(dn, queue, verdict=("pass", 97.5))  # later, so closer to the incident
    incident = open_incident(dn, web)

    ranked = suspects(dn, tmp_path, incident, "--deps", deps)["suspects"]

    assert [s["deployment_id"] for s in ranked] == [marginal, passed]
    assert [s["verdict"] for s in ranked] == ["marginal", "pass"]
    assert any(r.startswith("canary verdict marginal, score 80.0 at 10%") and r.endswith("x1.30") for r in ranked[0]["reasons"])
    assert any(r.startswith("promoted to 100%") for r in ranked[0]["reasons"])


def test_suspects_rollback_that_mitigated_the_incident_is_the_strongest_evidence(dn, tmp_path):
    web = unique("web")
    live = deploy(dn, web, "1.0.0")
    bad = deploy(dn, web, "2.0.0")
    incident = open_incident(dn, web)
    deployer, responder = dn.ledger("deployer"), dn.ledger("responder")
    assert deployer.rollback(bad, "5xx") == live
    responder.acknowledge(incident)
    responder.mitigate(incident, bad)

    ranked = suspects(dn, tmp_path, incident)["suspects"]

    assert [s["deployment_id"] for s in ranked] == [bad, live]
    assert ranked[0]["state"] == "live"  # at the incident; the rollback came after
    assert any(f"incident {incident} was mitigated by rolling back this deployment" in r and r.endswith("x2.00")
               for r in ranked[0]["reasons"])
    assert ranked[0]["score"] > 200  # 100 x ~1.0 x 1.15 x 2.0
    assert any(f"replaced by deployment {bad}" in r for r in ranked[1]["reasons"])


def test_suspects_a_canary_rolled_back_then_named_by_the_incident_ranks_first(dn, tmp_path):
    """The rollout controller's order: roll the failed canary back, then open an incident naming it."""
    web = unique("web")
    live = deploy(dn, web, "1.0.0")
    digest = dn.release(web, "2.0.0")
    deployer = dn.ledger("deployer")
    canary = deployer.start_deployment(digest, web, ENV, 10)
    deployer.record_analysis(canary, 40.0, "fail", judge="test")
    assert deployer.rollback(canary, "canary verdict fail") == live
    incident = dn.ledger("responder").open_incident(web, ENV, 2, "canary failed", suspects=[canary])

    ranked = suspects(dn, tmp_path, incident)["suspects"]

    assert [(s["deployment_id"], s["named"]) for s in ranked] == [(canary, True), (live, False)]
    assert not any("not serving" in r for r in ranked[0]["reasons"])
    assert ranked[0]["score"] == pytest.approx(product_of_factors(ranked[0]["reasons"]), rel=0.02)  # the reasons print each factor to 2 decimals


def test_suspects_human_output_lists_scores_and_reasons(dn, tmp_path):
    web = unique("web")
    last = deploy(dn, web)
    incident = open_incident(dn, web, "checkout down")

    result = dn.run("incident", "suspects", incident, "--db", tmp_path / "index.sqlite")

    assert result.code == 0, result.err
    assert f"incident {incident} sev2 {web} in {ENV}" in result.out and "checkout down" in result.out
    assert re.search(rf"1\. deployment {last}\s+{web} in {ENV}\s+score \d+\.\d", result.out)
    assert "same service and environment" in result.out


def test_auto_suspect_records_the_top_suspects_on_chain(dn, tmp_path):
    web, database = unique("web"), unique("db")
    deps = deps_file(tmp_path, {web: [database]})
    dependency = deploy(dn, database)
    top = deploy(dn, web)

    out = ok(dn.as_("responder", "incident", "open", "--service", web, "--env", ENV, "--severity", "2",
                    "--title", "latency", "--auto-suspect", "--deps", deps, "--db", tmp_path / "index.sqlite", "--json"))

    assert out["suspects"] == [top, dependency]
    assert [s["deployment_id"] for s in out["auto_suspects"]] == [top, dependency]
    assert all(s["score"] >= AUTO_SUSPECT_FLOOR and s["reasons"] for s in out["auto_suspects"])
    opened = [e for e in dn.history(web, kind="incident-opened") if e.fields["id"] == out["incident_id"]]
    assert len(opened) == 1 and list(opened[0].fields["suspects"]) == [top, dependency]
    # ...and `incident suspects` marks them as named when the incident was opened
    ranked = suspects(dn, tmp_path, out["incident_id"], "--deps", deps)["suspects"]
    assert [(s["deployment_id"], s["named"]) for s in ranked] == [(top, True), (dependency, True)]


def test_auto_suspect_keeps_explicit_suspects_and_says_why_on_stderr(dn, tmp_path):
    web, other = unique("web"), unique("other")
    named = deploy(dn, other)
    top = deploy(dn, web)

    result = dn.as_("responder", "incident", "open", "--service", web, "--env", ENV, "--severity", "3",
                    "--title", "errors", "--suspect", named, "--auto-suspect", "--db", tmp_path / "index.sqlite")

    assert result.code == 0, result.err
    incident = int(result.out.strip())
    assert f"auto-suspect: deployment {top} ({web} in {ENV}), score" in result.err
    opened = [e for e in dn.history(web, kind="incident-opened") if e.fields["id"] == incident]
    assert list(opened[0].fields["suspects"]) == [named, top]


def test_auto_suspect_with_nothing_to_suspect_opens_without_suspects(dn, tmp_path):
    web = unique("web")

    out = ok(dn.as_("responder", "incident", "open", "--service", web, "--env", ENV, "--severity", "4",
                    "--title", "odd graph", "--auto-suspect", "--db", tmp_path / "index.sqlite", "--json"))

    assert out["suspects"] == [] and out["auto_suspects"] == []
    opened = [e for e in dn.history(web, kind="incident-opened") if e.fields["id"] == out["incident_id"]]
    assert list(opened[0].fields["suspects"]) == []


def test_suspects_bad_input_is_a_usage_error(dn, tmp_path):
    bad = tmp_path / "deps.yaml"
    bad.write_text("web: payments\n")  # a string, not a list
    db = tmp_path / "index.sqlite"
    fails(dn.run("incident", "suspects", "1", "--deps", bad, "--db", db, "--json"), 2, str(bad), "list of service names")
    fails(dn.run("incident", "suspects", "999999", "--db", db, "--json"), 2, "incident 999999 is not in the index")
    fails(dn.as_("responder", "incident", "open", "--service", "web", "--env", ENV, "--severity", "2", "--title", "x",
                 "--deps", bad, "--json"), 2, "--deps goes with --auto-suspect")
    before = dn.nonce("responder")
    fails(dn.as_("responder", "incident", "open", "--service", "web", "--env", ENV, "--severity", "2", "--title", "x",
                 "--auto-suspect", "--deps", bad, "--db", db, "--json"), 2, "list of service names")
    assert dn.nonce("responder") == before  # nothing was sent


# ---------------------------------------------------------------------- the scoring rules, on hand-built rows


def started(block: int, at: int, deployment_id: int, service: str = "web", percent: int = 100) -> Row:
    return Row(block, 0, at, "DeploymentStarted", service, "prod",
               {"id": deployment_id, "digest": "0x" + f"{deployment_id:064x}", "service": service,
                "environment": "prod", "percent": percent, "previous": 0})


def test_rank_time_factor_and_window():
    rows = [started(10, 1_000, 1), started(11, 1_000 + 5 * 3600, 2, service="db")]
    moment = Moment(20, 0, 1_000 + 6 * 3600)  # 6 h after the first start, 1 h after the second

    ranked = rank(rows, service="web", environment="prod", moment=moment, dependencies={"web": ["db"]})
    assert [(s.deployment_id, s.score) for s in ranked] == [(2, round(100 * 0.6 * 0.5 * 1.15, 1)),
                                                          (1, round(100 / 7 * 1.15, 1))]

    narrow = rank(rows, service="web", environment="prod", moment=moment, dependencies={"web": ["db"]}, window=2 * 3600)
    assert [s.deployment_id for s in narrow] == [2]


def test_rank_rollback_before_the_incident_is_less_suspect_after_it_more():
    def rolled_back(block, at):
        return Row(block, 0, at, "DeploymentRolledBack", "web", "prod", {"id": 1, "restored": 0, "reason": "x"})

    moment = Moment(20, 0, 2_000)
    before = rank([started(10, 1_000, 1), rolled_back(15, 1_500)], service="web", environment="prod", moment=moment)
    incident = IncidentFacts(id=7, service="web", environment="prod", severity=2, title="t", opened=moment)
    after = rank([started(10, 1_000, 1), rolled_back(25, 2_600)], service="web", environment="prod", moment=moment,
                 incident=incident)
    plain = rank([started(10, 1_000, 1)], service="web", environment="prod", moment=moment)

    assert before[0].state == "rolled-back" and before[0].score == pytest.approx(plain[0].score * 0.3, abs=0.1)
    assert after[0].score == pytest.approx(plain[0].score * 1.5, abs=0.1)
    assert "rolled back 10 min after the incident opened" in after[0].reasons[-1]


def test_rank_only_the_environment_and_services_concerned():
    rows = [started(10, 1_000, 1, service="web"), started(11, 1_000, 2, service="unrelated"),
            Row(12, 0, 1_000, "DeploymentStarted", "web", "staging",
                {"id": 3, "digest": "0x" + "3" * 64, "service": "web", "environment": "staging", "percent": 100, "previous": 0})]
    ranked = rank(rows, service="web", environment="prod", moment=Moment(20, 0, 1_100))
    assert [s.deployment_id for s in ranked] == [1]


def test_auto_suspects_top_three_above_the_floor():
    rows = [started(10 + i, 1_000 + i, i + 1) for i in range(5)] + [started(30, 1_000 - 23 * 3600, 9, service="db")]
    ranked = rank(rows, service="web", environment="prod", moment=Moment(40, 0, 1_100), dependencies={"web": ["db"]})
    assert len(ranked) == 6 and ranked[-1].score < AUTO_SUSPECT_FLOOR
    assert [s.deployment_id for s in auto_suspects(ranked)] == [5, 4, 3]


def test_dependency_hops_transitive_and_cycles():
    deps = {"web": ["api"], "api": ["db", "web"], "db": ["disk"]}
    assert dependency_hops("web", deps) == {"web": 0, "api": 1, "db": 2, "disk": 3}
    assert dependency_hops("lonely", deps) == {"lonely": 0}


def test_load_dependencies_yaml_json_and_errors(tmp_path):
    (tmp_path / "d.yaml").write_text("# who calls whom\nweb: [api, db]\napi:\n")
    (tmp_path / "d.json").write_text(json.dumps({"web": ["api"]}))
    assert load_dependencies(tmp_path / "d.yaml") == {"web": ("api", "db"), "api": ()}
    assert load_dependencies(tmp_path / "d.json") == {"web": ("api",)}
    for text, needle in (("- web\n- api\n", "must map each service"), ("web: [api, 'bad name']\n", "service 'bad name'"),
                         ("web: [api\n", "bad.yaml:2: not valid YAML")):
        (tmp_path / "bad.yaml").write_text(text)
        with pytest.raises(UsageError, match=re.escape(needle)):
            load_dependencies(tmp_path / "bad.yaml")
    with pytest.raises(UsageError, match="cannot read the dependency config"):
        load_dependencies(tmp_path / "missing.yaml")
