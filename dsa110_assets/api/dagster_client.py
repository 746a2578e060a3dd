"""The API's client of Dagster's GraphQL endpoint: sensors, partitions, runs.

The API switches the incoming sensor and launches mosaics through the webserver's GraphQL
API, the same mutations the UI sends (``startSensor`` with a sensor selector; ``stopSensor``
with the sensor's instigation-state id, which is how the UI's toggle stops one;
``launchRun``), so the effect is exactly the UI's and needs no access to the instance's
storage. It speaks HTTP with :mod:`urllib.request` from the standard library: the few small
POSTs it makes need no HTTP client dependency (``httpx`` is a test dependency only).

Two kinds of failure are told apart, so the HTTP shell can answer each properly:
:class:`DagsterUnavailable` (nothing answered in time: the webserver is down or hung) and
:class:`DagsterError` (it answered with an error, e.g. an unknown sensor).
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dsa110_assets.errors import PipelineError

#: Where ``dagster dev`` and ``deploy/systemd/dagster-webserver.service`` serve the UI.
DEFAULT_DAGSTER_URL = "http://127.0.0.1:3000"
#: ``Definitions`` objects load as one repository of this name.
DEFAULT_REPOSITORY = "__repository__"
#: ``workspace.yaml``'s location name.
DEFAULT_LOCATION = "dsa110_assets"
DEFAULT_TIMEOUT_S = 10.0

_SENSOR_FIELDS = """
    __typename
    ... on Sensor { name sensorState { id status } }
    ... on SensorNotFoundError { message }
    ... on UnauthorizedError { message }
    ... on PythonError { message }
"""
SENSOR_QUERY = (
    "query SensorState($selector: SensorSelector!) {"
    f" sensorOrError(sensorSelector: $selector) {{ {_SENSOR_FIELDS} }} }}"
)
SENSORS_QUERY = """
query SensorStates($selector: RepositorySelector!) {
  repositoryOrError(repositorySelector: $selector) {
    __typename
    ... on Repository { sensors { name sensorState { status } } }
    ... on RepositoryNotFoundError { message }
    ... on PythonError { message }
  }
}
"""
START_SENSOR = (
    "mutation StartSensor($selector: SensorSelector!) {"
    f" startSensor(sensorSelector: $selector) {{ {_SENSOR_FIELDS} }} }}"
)
STOP_SENSOR = """
mutation StopSensor($id: String!) {
  stopSensor(id: $id) {
    __typename
    ... on StopSensorMutationResult { instigationState { status } }
    ... on UnauthorizedError { message }
    ... on PythonError { message }
  }
}
"""
PARTITION_BOUNDS = """
query PartitionBounds($selector: PipelineSelector!) {
  pipelineOrError(params: $selector) {
    __typename
    ... on Pipeline {
      first: partitionKeysOrError(limit: 1) { partitionKeys }
      last: partitionKeysOrError(limit: 1, reverse: true) { partitionKeys }
    }
    ... on PipelineNotFoundError { message }
    ... on PythonError { message }
  }
}
"""
LAUNCH_RUN = """
mutation LaunchRun($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on Error { message }
  }
}
"""
RUNS_QUERY = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId status tags { key value } } }
    ... on Error { message }
  }
}
"""


class DagsterUnavailable(PipelineError, ConnectionError):
    """Dagster's webserver did not answer (refused, unreachable or timed out)."""


class DagsterError(PipelineError, RuntimeError):
    """Dagster answered, with an error (GraphQL errors, an unknown sensor or job, ...)."""


@dataclass(frozen=True)
class SensorState:
    """A sensor as Dagster's instance holds it: ``RUNNING`` or ``STOPPED``."""

    name: str
    status: str
    state_id: str


@dataclass(frozen=True)
class RunInfo:
    """A Dagster run: id, status (``QUEUED``, ``STARTED``, ``SUCCESS``, ...) and tags."""

    run_id: str
    status: str
    tags: dict[str, str]


def check_url(url: str) -> str:
    """Return ``url`` without a trailing slash, refusing anything but ``http(s)://host...``.

    Raises
    ------
    ValueError
        Naming the URL.
    """
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"Dagster URL {url!r} is not http://HOST[:PORT]")
    return url.strip().rstrip("/")


@dataclass(frozen=True)
class DagsterClient:
    """The webserver at ``url``, and the code location and repository the API works on."""

    url: str
    location: str = DEFAULT_LOCATION
    repository: str = DEFAULT_REPOSITORY
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", check_url(self.url))

    @property
    def graphql_url(self) -> str:
        """The GraphQL endpoint."""
        return f"{self.url}/graphql"

    def execute(
        self, query: str, variables: Mapping[str, Any], *, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """POST one GraphQL request and return its ``data``.

        Raises
        ------
        DagsterUnavailable
            No answer within the timeout.
        DagsterError
            An HTTP error, an unreadable answer, or GraphQL ``errors``.
        """
        body = json.dumps({"query": query, "variables": dict(variables)}).encode()
        request = urllib.request.Request(
            self.graphql_url,
            data=body,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            method="POST",
        )
        timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            text = exc.read(300).decode("utf-8", "replace")
            raise DagsterError(f"Dagster at {self.url} answered HTTP {exc.code}: {text}") from None
        except (OSError, http.client.HTTPException) as exc:
            # Refused, reset, timed out, or something at the URL that does not speak HTTP.
            reason = getattr(exc, "reason", None) or exc
            raise DagsterUnavailable(f"Dagster at {self.url} is unreachable: {reason}") from None
        try:
            answer = json.loads(raw)
        except ValueError:
            raise DagsterError(f"Dagster at {self.url} sent an answer that is not JSON") from None
        if not isinstance(answer, dict):
            raise DagsterError(f"Dagster at {self.url} sent JSON that is not a GraphQL answer")
        if answer.get("errors"):
            first = answer["errors"][0].get("message", "unknown error")
            raise DagsterError(f"Dagster at {self.url}: {first}")
        return answer.get("data") or {}

    # --- sensors -------------------------------------------------------------------------

    def _sensor_selector(self, name: str) -> dict[str, str]:
        return {
            "repositoryLocationName": self.location,
            "repositoryName": self.repository,
            "sensorName": name,
        }

    def _repository_selector(self) -> dict[str, str]:
        return {"repositoryLocationName": self.location, "repositoryName": self.repository}

    def sensor_states(self, *, timeout_s: float | None = None) -> dict[str, str]:
        """Return every sensor of the repository and its status, by name."""
        data = self.execute(
            SENSORS_QUERY, {"selector": self._repository_selector()}, timeout_s=timeout_s
        )
        repo = _expect(data, "repositoryOrError", "Repository")
        return {s["name"]: s["sensorState"]["status"] for s in repo.get("sensors") or []}

    def sensor_state(self, name: str, *, timeout_s: float | None = None) -> SensorState:
        """Return the sensor ``name``'s state."""
        data = self.execute(
            SENSOR_QUERY, {"selector": self._sensor_selector(name)}, timeout_s=timeout_s
        )
        sensor = _expect(data, "sensorOrError", "Sensor")
        state = sensor["sensorState"]
        return SensorState(sensor["name"], state["status"], state["id"])

    def start_sensor(self, name: str) -> str:
        """Start the sensor ``name`` (as the UI's toggle does); return its new status."""
        data = self.execute(START_SENSOR, {"selector": self._sensor_selector(name)})
        return _expect(data, "startSensor", "Sensor")["sensorState"]["status"]

    def stop_sensor(self, name: str) -> str:
        """Stop the sensor ``name`` (as the UI's toggle does); return its new status."""
        state = self.sensor_state(name)
        data = self.execute(STOP_SENSOR, {"id": state.state_id})
        result = _expect(data, "stopSensor", "StopSensorMutationResult")
        return result["instigationState"]["status"]

    # --- partitions and runs -------------------------------------------------------------

    def partition_bounds(self, job: str) -> tuple[str | None, str | None]:
        """Return the first and last partition keys of ``job`` (None, None without any)."""
        selector = {**self._repository_selector(), "pipelineName": job}
        data = self.execute(PARTITION_BOUNDS, {"selector": selector})
        pipeline = _expect(data, "pipelineOrError", "Pipeline")
        first = pipeline["first"]["partitionKeys"]
        last = pipeline["last"]["partitionKeys"]
        return (first[0] if first else None), (last[0] if last else None)

    def launch_run(
        self, job: str, asset_keys: Sequence[Sequence[str]], tags: Mapping[str, str]
    ) -> RunInfo:
        """Launch a run of ``job`` materializing ``asset_keys``, with ``tags``."""
        params = {
            "selector": {
                **self._repository_selector(),
                "jobName": job,
                "assetSelection": [{"path": list(key)} for key in asset_keys],
            },
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
        }
        data = self.execute(LAUNCH_RUN, {"params": params})
        run = _expect(data, "launchRun", "LaunchRunSuccess")["run"]
        return RunInfo(run["runId"], run["status"], dict(tags))

    def runs_tagged(self, key: str, value: str) -> list[RunInfo]:
        """Return the runs carrying tag ``key=value``, newest first."""
        data = self.execute(RUNS_QUERY, {"filter": {"tags": [{"key": key, "value": value}]}})
        runs = _expect(data, "runsOrError", "Runs")
        return [
            RunInfo(r["runId"], r["status"], {t["key"]: t["value"] for t in r.get("tags") or []})
            for r in runs.get("results") or []
        ]


def _expect(data: Mapping[str, Any], field: str, typename: str) -> dict[str, Any]:
    """Return ``data[field]`` if it is a ``typename``, else raise with Dagster's message.

    Raises
    ------
    DagsterError
        The union resolved to an error type (its ``message``, or its validation errors).
    """
    value = data.get(field)
    if not isinstance(value, dict):
        raise DagsterError(f"Dagster sent no {field}")
    if value.get("__typename") == typename:
        return value
    message = value.get("message")
    if not message and value.get("errors"):
        message = "; ".join(e.get("message", "") for e in value["errors"])
    raise DagsterError(f"{value.get('__typename', field)}: {message or 'no message'}")
