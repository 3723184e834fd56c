"""The Grafana dashboard is well formed and queries only metrics the worker exposes."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from faust.sensors.prometheus import FaustMetrics
from prometheus_client import CollectorRegistry

from saga_app.metrics import LoopMetrics, SagaMetrics

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboards" / "grafana-sagas.json"
DS_UID = "${DS_PROMETHEUS}"

# What prometheus_client puts after a family's name in the exposition, by family type.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
    "unknown": ("",),
}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_IDENT = re.compile(r"(?<![\w:$.])[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
}
_LABEL_VALUES = re.compile(r"label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,")


def metric_names(expr: str) -> set[str]:
    """Metric identifiers in a PromQL expression: not functions, keywords, labels or strings."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        name = match.group()
        if name.lower() in _KEYWORDS or re.match(r"\s*\(", text[match.end() :]):
            continue
        names.add(name)
    return names


def exposed_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name the registry's families can expose, derived from their types."""
    return {
        family.name + suffix for family in registry.collect() for suffix in _SUFFIXES[family.type]
    }


def unknown_metrics(dashboard: dict[str, Any], exposed: set[str]) -> dict[str, set[str]]:
    """Metric names each panel target or template variable uses that nothing exposes."""
    unknown: dict[str, set[str]] = {}
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            missing = metric_names(target["expr"]) - exposed
            if missing:
                unknown[f"{panel['title']} / {target['refId']}"] = missing
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        missing = set(_LABEL_VALUES.findall(text)) - exposed
        if missing:
            unknown[f"${variable['name']}"] = missing
    return unknown


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Top-level panels plus those nested in collapsed rows."""
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def exposed() -> set[str]:
    saga = CollectorRegistry()
    SagaMetrics(saga)
    LoopMetrics(saga)
    faust = CollectorRegistry()
    FaustMetrics.create(faust, "faust")
    return exposed_names(saga) | exposed_names(faust)


def test_dashboard_identity_and_datasource_input(dashboard: dict[str, Any]) -> None:
    """The dashboard has the kafka-saga uid and title and a DS_PROMETHEUS datasource input."""
    assert dashboard["uid"] == "kafka-saga"
    assert dashboard["title"] == "kafka-saga"
    assert 36 <= dashboard["schemaVersion"] <= 41
    inputs = {i["name"]: i for i in dashboard["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["type"] == "datasource"
    assert inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"


def test_panels_have_unique_ids_and_fit_the_grid_without_overlap(
    dashboard: dict[str, Any],
) -> None:
    """Every panel has a unique id and a gridPos inside the 24 columns that overlaps no other."""
    panels = all_panels(dashboard)
    ids = [p["id"] for p in panels]
    assert all(isinstance(i, int) for i in ids)
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        pos = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= pos.keys(), panel["title"]
        assert pos["h"] > 0 and pos["w"] > 0 and pos["x"] >= 0 and pos["y"] >= 0
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_graph_panel_queries_prometheus_with_expr_legend_and_unit(
    dashboard: dict[str, Any],
) -> None:
    """Each non-row panel uses the DS_PROMETHEUS datasource, sets a unit, and has targets."""
    graphs = [p for p in all_panels(dashboard) if p["type"] != "row"]
    assert len(graphs) >= 12
    for panel in graphs:
        assert panel["datasource"] == {"type": "prometheus", "uid": DS_UID}, panel["title"]
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
        targets = panel["targets"]
        assert targets, panel["title"]
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in targets:
            assert target["datasource"]["uid"] == DS_UID, panel["title"]
            assert target["expr"].strip(), panel["title"]
            assert target["legendFormat"], panel["title"]
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


def test_saga_type_variable_lists_saga_types_and_filters_panels(
    dashboard: dict[str, Any],
) -> None:
    """A saga_type variable takes its values from saga_started_total and panels filter by it."""
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    saga_type = variables["saga_type"]
    assert saga_type["type"] == "query"
    assert saga_type["query"] == "label_values(saga_started_total, saga_type)"
    assert saga_type["datasource"]["uid"] == DS_UID
    exprs = [t["expr"] for p in all_panels(dashboard) for t in p.get("targets", [])]
    assert sum('saga_type=~"$saga_type"' in e for e in exprs) >= 5


def test_every_metric_in_the_dashboard_is_exposed(
    dashboard: dict[str, Any], exposed: set[str]
) -> None:
    """Every metric name a query uses is one SagaMetrics, LoopMetrics or Faust's sensors expose."""
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            assert metric_names(target["expr"]), f"no metric found in {target['expr']!r}"
    assert unknown_metrics(dashboard, exposed) == {}


def test_a_misspelled_metric_in_a_panel_is_reported(
    dashboard: dict[str, Any], exposed: set[str]
) -> None:
    """Renaming one metric in one panel's query makes the check report that panel and name."""
    broken = copy.deepcopy(dashboard)
    panel = next(p for p in all_panels(broken) if p.get("targets"))
    target = panel["targets"][0]
    target["expr"] = target["expr"].replace("saga_started_total", "saga_startd_total")
    key = f"{panel['title']} / {target['refId']}"
    assert "saga_startd_total" in unknown_metrics(broken, exposed).get(key, set())
    assert "saga_startd_total" not in unknown_metrics(dashboard, exposed).get(key, set())


def test_metric_names_skips_functions_keywords_labels_and_strings() -> None:
    """Only metric identifiers come out of an expression, not functions, labels or values."""
    expr = (
        'histogram_quantile(0.95, sum by (step, le) (rate(a_bucket{step=~"x_y", le!="1"}[5m])))'
        " / on (job) group_left (instance) b_total offset 5m"
        ' and sum(rate(c_total[1m:30s])) without (kind) > 1e3 unless d or label_replace(e, "f", "")'
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c_total", "d", "e"}


def test_exposed_names_match_what_prometheus_client_samples(exposed: set[str]) -> None:
    """The type-derived names include every sample name prometheus_client really exposes."""
    registry = CollectorRegistry()
    metrics = SagaMetrics(registry)
    metrics.swept(0.002, 3)
    metrics.ignored("reply", "duplicate")
    metrics.dead_lettered("saga-requests")
    samples = {s.name for family in registry.collect() for s in family.samples}
    assert "saga_sweep_timeouts_sent_total" in samples
    assert "saga_sweep_duration_seconds_bucket" in samples
    assert samples <= exposed
    assert "saga_started_total" in exposed
    assert "saga_started" not in exposed
