"""The alerts: valid rules, each tested with promtool, each with a runbook; the PrometheusRule is
made from the same file."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from harness.worker import ROOT
from tests.dashboards import DASHBOARDS, rendered

ALERTS = yaml.safe_load((DASHBOARDS / "alerts.yml").read_text())


def _alerts() -> list[dict[str, object]]:
    return [rule for group in ALERTS["groups"] for rule in group["rules"]]


def test_every_alert_fires_and_stays_quiet_as_its_unit_test_says() -> None:
    done = subprocess.run(
        ["promtool", "test", "rules", "alerts-test.yml"], cwd=DASHBOARDS, capture_output=True, text=True
    )

    assert done.returncode == 0, done.stdout + done.stderr
    tested = set(re.findall(r"alertname: (\w+)", (DASHBOARDS / "alerts-test.yml").read_text()))
    assert tested == {rule["alert"] for rule in _alerts()}


def test_the_prometheus_rule_is_made_from_alerts_yml_and_checks(tmp_path: Path) -> None:
    committed = (DASHBOARDS / "prometheus" / "prometheusrule.yaml").read_text()
    groups = tmp_path / "groups.yml"
    groups.write_text(yaml.safe_dump({"groups": yaml.safe_load(committed)["spec"]["groups"]}))

    assert rendered("rules") == committed
    checked = subprocess.run(["promtool", "check", "rules", str(groups)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_alert_has_a_runbook_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    headings = {re.sub(r"[^a-z0-9]", "", h.lower()) for h in re.findall(r"^#### (.+)$", readme, flags=re.MULTILINE)}

    for rule in _alerts():
        anchor = str(rule["annotations"]["runbook_url"]).rpartition("#")[2]  # type: ignore[index]
        assert anchor == str(rule["alert"]).lower()
        assert anchor in headings, f"no runbook heading for {rule['alert']}"
