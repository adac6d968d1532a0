"""A link that opens the MLflow UI on a sweep's runs charted per strategy.

MLflow 3.17's frontend restores a saved ("shared") runs view from an
experiment tag: the hash route
``#/experiments/<id>/runs?viewStateShareKey=<key>`` makes the runs page read
the tag ``mlflow.sharedViewState.<key>``, whose value is a JSON envelope
``{"name", "createdAt", "updatedAt", "state"}``; ``state`` is a string holding
the view's JSON (plain, or ``deflate;`` + base64 of zlib data, which the UI's
own "Save view" writes). Of that view the page keeps the search facets
(``searchFilter``, ``orderByKey``, ...) and the UI-state fields it persists
(``groupBy``, ``useGroupedValuesInCharts``, ``hideEmptyCharts``,
``chartsSearchFilter``, ...); everything else is ignored. Two more URL
parameters choose what is shown around it: ``compareRunsMode=CHART`` (charts
instead of the table) and ``workflowType=machine_learning`` ("Model training"
rather than the GenAI view). A search facet in the URL would make the page
skip the shared view, so the link carries none.
"""

from __future__ import annotations

import json
import time
import zlib
from base64 import b64encode
from typing import Any
from urllib.parse import urlencode

from mlflow.tracking import MlflowClient

SHARED_VIEW_TAG_PREFIX = "mlflow.sharedViewState."
"""Prefix of the experiment tag holding a saved view (the UI's ``mlflow.sharedViewState.``)."""

SHARE_KEY_PARAM = "viewStateShareKey"
"""URL parameter naming the saved view to restore."""

VIEW_KEY = "lifelong-by-strategy"
"""Share key of lifelong's view: one tag per experiment, rewritten on each call."""

VIEW_NAME = "lifelong: runs by strategy"
"""Name the UI lists the view under (its saved-views menu)."""

_DEFLATE_HEADER = "deflate;"


def shared_view_state(metric: str = "acc/avg", group_tag: str = "strategy") -> dict[str, Any]:
    """The runs-page view: runs grouped by tag ``group_tag`` (average), charts of ``metric``.

    Only fields the MLflow 3.17 frontend restores from a shared view are set;
    ``chartsSearchFilter`` narrows the chart area to the charts whose name
    contains ``metric`` (the user can clear it in the charts' search box).
    """
    return {
        "groupBy": {
            "aggregateFunction": "average",
            "groupByKeys": [{"mode": "tag", "groupByData": group_tag}],
        },
        "useGroupedValuesInCharts": True,
        "hideEmptyCharts": True,
        "chartsSearchFilter": metric,
    }


def encode_state(state: dict[str, Any], *, compress: bool = False) -> str:
    """``state`` as the tag envelope's ``state`` string: JSON, or ``deflate;`` + base64(zlib)."""
    text = json.dumps(state, separators=(",", ":"))
    if not compress:
        return text
    return _DEFLATE_HEADER + b64encode(zlib.compress(text.encode())).decode("ascii")


def view_envelope(state: dict[str, Any], name: str = VIEW_NAME, *, compress: bool = False) -> str:
    """The experiment tag's value: the saved-view envelope around ``state``."""
    now = int(time.time() * 1000)
    return json.dumps(
        {
            "name": name,
            "createdAt": now,
            "updatedAt": now,
            "state": encode_state(state, compress=compress),
        },
        separators=(",", ":"),
    )


def comparison_view_url(
    base_url: str,
    client: MlflowClient,
    experiment_id: str,
    metric: str = "acc/avg",
    *,
    group_tag: str = "strategy",
    key: str = VIEW_KEY,
) -> str:
    """Save the per-strategy chart view on the experiment and return the URL opening it.

    Sets the experiment tag ``mlflow.sharedViewState.<key>`` (through
    ``client.set_experiment_tag``) and returns
    ``<base_url>/#/experiments/<id>/runs?viewStateShareKey=<key>&compareRunsMode=CHART&
    workflowType=machine_learning``: the "Model training" runs page in chart mode,
    runs grouped by tag ``group_tag`` (one averaged line per value), charts filtered
    to ``metric``.
    """
    state = shared_view_state(metric, group_tag)
    client.set_experiment_tag(experiment_id, SHARED_VIEW_TAG_PREFIX + key, view_envelope(state))
    query = urlencode(
        {SHARE_KEY_PARAM: key, "compareRunsMode": "CHART", "workflowType": "machine_learning"}
    )
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def latest_sweep_experiment(client: MlflowClient) -> str | None:
    """The id of the experiment whose lifelong sweep started last (None: the store has none)."""
    ids = [e.experiment_id for e in client.search_experiments()]
    if not ids:
        return None
    runs = client.search_runs(
        ids,
        filter_string="tags.`lifelong.role` = 'sweep'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.experiment_id if runs else None
