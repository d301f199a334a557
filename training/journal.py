"""A local note of the runs this machine has open, so none stays RUNNING forever.

When the tracking server dies mid-run and does not come back within the client's retry
window, nobody can tell the server that the run failed. The run id stays in this journal, and
the next training against that server marks it FAILED before it starts a run of its own.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

logger = logging.getLogger(__name__)


class RunJournal:
    def __init__(self, path: Path, tracking_uri: str) -> None:
        self.path = path
        self.tracking_uri = tracking_uri

    def _read(self) -> list[dict[str, str]]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return []

    def _write(self, entries: list[dict[str, str]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staged = self.path.with_suffix(".tmp")
        staged.write_text(json.dumps(entries))
        os.replace(staged, self.path)

    def opened(self, run_id: str) -> None:
        self._write([*self._read(), {"run_id": run_id, "tracking_uri": self.tracking_uri}])

    def closed(self, run_id: str) -> None:
        self._write([e for e in self._read() if e["run_id"] != run_id])

    def close_orphans(self, client: MlflowClient) -> list[str]:
        """Mark this server's runs that an earlier training could not end as FAILED."""
        closed = []
        for entry in self._read():
            if entry["tracking_uri"] != self.tracking_uri:
                continue
            run_id = entry["run_id"]
            try:
                if client.get_run(run_id).info.status == "RUNNING":
                    client.set_tag(run_id, "failure", "tracking server unreachable; run ended")
                    client.set_terminated(run_id, status="FAILED")
                    logger.warning("marked run %s FAILED: an earlier training lost it", run_id)
                    closed.append(run_id)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
            self.closed(run_id)
        return closed
