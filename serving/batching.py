"""Adaptive batching of MLflow predictions: concurrent requests, one model call.

In MLflow's scoring server a one-row request costs ~1.25 ms and a 32-row one ~1.5 ms: the cost is
per request (parsing, schema enforcement, the model call's set-up), not per row. So requests that
arrive while the model is busy are parsed, merged into one DataFrame, predicted in one call
(``PyFuncModel.predict``, its schema enforcement included) and the predictions split back.

Nothing waits for a batch to fill unless the load is concurrent: a request that finds the model
idle is predicted at once (no latency added at concurrency 1); while a batch is being predicted
the next requests queue and form the next batch. Only after a batch of several requests does
the worker wait up to ``max_wait_s`` for more, until ``max_rows`` rows are queued.

A lone request can skip the worker thread altogether: ``predict_now`` predicts it on the
caller's thread (the scoring app's event loop) when nothing else is in flight. Handing it to the
worker and its answer back costs two thread wake-ups and a GIL hand-over, a sizeable part of a
one-row prediction; blocking the event loop for it costs nothing when no other request is
there to serve. ``quick`` keeps this to requests the model answers in a few milliseconds, so a
slow model or a large request never holds the loop (and ``/ping``) for long.

Answers stay MLflow's: requests are parsed with MLflow's own functions and answers formatted with
them. A request is predicted alone, through MLflow's own ``invocations`` (exactly what
``mlflow models serve`` runs), whenever merging could change its answer: content types other
than JSON and CSV, tensor inputs, ``params``, the unified LLM format, zero rows, input that does
not parse, a model output that is not one prediction per row. Requests are merged only with
requests of the same columns and dtypes, so the merged frame has the dtypes each had alone. If
the merged call fails, every request of the batch is predicted alone: one bad request gets
MLflow's error, the others their predictions.

Batching assumes what scoring servers assume of a model: each row's prediction depends on that
row only. serving/batch_policy.py decides per served version whether that holds (row-wise
flavours by default, others by opt-in, never a schema whose parsing depends on other rows);
with ``merge`` off every request is predicted alone.
"""

from __future__ import annotations

import inspect
import itertools
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from io import StringIO
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.pyfunc import scoring_server

from serving.batch_policy import row_safe_schema
from stack_common.mlflow_internals import parse_json_data, signature_from_type_hint

logger = logging.getLogger(__name__)

JSON = scoring_server.CONTENT_TYPE_JSON
CSV = scoring_server.CONTENT_TYPE_CSV
DF_SPLIT = scoring_server.DF_SPLIT
DF_RECORDS = scoring_server.DF_RECORDS
# JSON values a column may hold and still be merged (nested lists or objects: alone).
SCALARS = frozenset({int, float, str, bool, type(None)})
# predict_now only for bodies this small (a few hundred rows at most) and only while such lone
# requests have taken at most this long: beyond that the thread hop saved is noise, and the
# event loop would be held for longer than a health check should wait.
INLINE_MAX_BYTES = 16 * 1024
INLINE_MAX_S = 0.005


@dataclass(frozen=True)
class Answer:
    body: bytes
    status: int
    media_type: str
    batch_rows: int | None = None  # rows of the model call that answered, when there was one
    retry_after_s: int | None = None  # a Retry-After header (an overloaded process's 503)


# What Starlette answers when a route raises something other than MlflowException.
INTERNAL_ERROR = Answer(b"Internal Server Error", 500, "text/plain; charset=utf-8")


def mlflow_answer(
    body: bytes, content_type: str | None, model: Any, schema: Any, request_id: str | None = None
) -> Answer:
    """One request exactly as MLflow's scoring server answers it (``invocations`` plus the
    app's handling of ``MlflowException``). A failure's log line names the request (nginx's
    ``X-Request-ID``, which the client also got), so an operator finds it from the answer."""
    try:
        result = scoring_server.invocations(body, content_type, model, schema)
    except MlflowException as exc:
        status = exc.get_http_status_code()
        message = str(exc.message).strip().splitlines()[0][:200] if exc.message else ""
        logger.info(
            "prediction refused (%d %s): %s",
            status,
            exc.error_code,
            message,
            extra={"request_id": request_id},
        )
        return Answer(exc.serialize_as_json().encode(), status, JSON)
    except Exception:
        logger.exception("prediction failed", extra={"request_id": request_id})
        return INTERNAL_ERROR
    return Answer(result.response.encode(), result.status, result.mimetype)


def _plain_media_type(content_type: str | None) -> str | None:
    """``application/json`` or ``text/csv`` when MLflow would parse the body as exactly that
    (utf-8, no other content-type parameter); otherwise None: MLflow's own code answers."""
    if content_type is None:
        return None
    mime, *parameters = (part.strip() for part in content_type.split(";"))
    for parameter in parameters:
        key, _, value = parameter.partition("=")
        if key != "charset" or value.lower() != "utf-8":
            return None
    return mime if mime in (JSON, CSV) else None


@dataclass
class Job:
    body: bytes
    content_type: str | None
    deliver: Callable[[Answer], object]
    request_id: str | None = None
    # When the request can be merged: its rows (a JSON request's decoded rows, or a CSV
    # request's parsed DataFrame), how many, and what it may be merged with.
    payload: Any = None
    rows: int = 0
    key: tuple = ()


@dataclass
class BatchStats:
    """What the worker did, for tests and logs."""

    batches: int = 0
    merged_requests: int = 0
    alone: int = 0
    fallbacks: int = 0
    largest: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Batcher:
    """One worker thread predicting batches; ``submit`` is called from any thread."""

    def __init__(
        self,
        model: Any,
        max_rows: int,
        max_wait_s: float,
        start: bool = True,
        merge: bool = True,
    ) -> None:
        self.model = model
        self.schema = model.metadata.get_input_schema()
        # Off: every request is MLflow's invocations alone, one at a time (serving/batch_policy.py
        # decides; a schema whose parsing depends on other rows is never merged).
        self.merge = merge and row_safe_schema(self.schema)
        self.max_rows = max(1, max_rows)
        self.max_wait_s = max(0.0, max_wait_s)
        self.takes_params = "params" in inspect.signature(model.predict).parameters
        # MLflow passes a type-hinted model's "inputs" unparsed: nothing to merge then.
        metadata = model.metadata
        self.parses_json = not signature_from_type_hint(metadata)
        self.stats = BatchStats()
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._held: Job | None = None  # parsed, but did not fit into the last batch
        self._concurrent = False  # the last batch held several requests
        # CPU seconds a lone small request took lately (moving average; None: none seen yet).
        # CPU time, not wall time: on a busy machine a preempted prediction is not a slow one.
        self.lone_s: float | None = None
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        if start:
            self.start()

    def start(self) -> None:
        self._thread.start()

    def submit(
        self,
        body: bytes,
        content_type: str | None,
        deliver: Callable[[Answer], object],
        request_id: str | None = None,
    ) -> None:
        self._queue.put(Job(body, content_type, deliver, request_id))

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def quick(self, size: int) -> bool:
        """Whether a lone request of ``size`` bytes may be predicted on the caller's thread."""
        return size <= INLINE_MAX_BYTES and self.lone_s is not None and self.lone_s <= INLINE_MAX_S

    def predict_now(
        self, body: bytes, content_type: str | None, request_id: str | None = None
    ) -> Answer:
        """One request predicted on the caller's thread, exactly as the worker would predict it
        alone. The caller guarantees the worker is idle: nothing submitted is unanswered (so
        the model is never called from two threads at once)."""
        answers: list[Answer] = []
        job = Job(body, content_type, answers.append, request_id)
        started = time.thread_time()
        if self._parse(job):
            self._predict([job])
        else:
            self._alone(job)
        self._lone(job, time.thread_time() - started)
        self._concurrent = False
        return answers[0]

    def _lone(self, job: Job, seconds: float) -> None:
        if len(job.body) <= INLINE_MAX_BYTES:
            last = self.lone_s
            self.lone_s = seconds if last is None else 0.8 * last + 0.2 * seconds

    # -- the worker thread ----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            job = self._held or self._queue.get()
            self._held = None
            if job is None:
                return
            started = time.thread_time()
            try:
                if self._batch(job) == 1:
                    self._lone(job, time.thread_time() - started)
            except Exception:  # never lose the worker; the jobs got answers or an error
                logger.exception("batch failed")

    def _next(self, deadline: float) -> Job | None:
        try:
            if not self._concurrent:
                return self._queue.get_nowait()
            return self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return None

    def _batch(self, first: Job) -> int:
        """Predicts ``first`` and what queues behind it; returns how many requests that was."""
        groups: dict[tuple, list[Job]] = {}
        rows = 0
        requests = 0
        alone = 0
        deadline = time.monotonic() + self.max_wait_s
        job: Job | None = first
        while job is not None:
            if not self._parse(job):
                self._alone(job)
                alone += 1
            else:
                if requests and rows + job.rows > self.max_rows:
                    self._held = job
                    break
                groups.setdefault(job.key, []).append(job)
                rows += job.rows
                requests += 1
                if rows >= self.max_rows:
                    break
            job = self._next(deadline)
        self._concurrent = requests > 1
        for jobs in groups.values():
            self._predict(jobs)
        return requests + alone

    def _parse(self, job: Job) -> bool:
        """True when ``job`` can be merged; its rows and merge key are then set.

        JSON: only the DataFrame formats (``dataframe_split`` with just columns and data,
        ``dataframe_records``), decoded but not yet parsed: a batch is parsed once, by MLflow's
        own ``_parse_json_data`` on the merged JSON. Requests are merged only when each column
        holds the same JSON types, so pandas infers the same dtypes for the merged frame as for
        each alone. CSV: parsed alone by MLflow's ``parse_csv_input``, merged by dtypes.
        """
        media_type = _plain_media_type(job.content_type)
        if media_type is None or not self.merge:
            return False
        if media_type == JSON:
            return self.parses_json and self._json_rows(job)
        import pandas as pd

        try:
            text = job.body.decode("utf-8")
            frame = scoring_server.parse_csv_input(StringIO(text), schema=self.schema)
        except Exception:
            return False  # MLflow's own code answers with its error
        if not isinstance(frame, pd.DataFrame) or not 0 < len(frame) <= self.max_rows:
            return False
        job.payload, job.rows = frame, len(frame)
        job.key = (CSV, tuple(frame.columns), tuple(str(t) for t in frame.dtypes))
        return True

    def _json_rows(self, job: Job) -> bool:
        try:
            decoded = json.loads(job.body)
        except Exception:
            return False
        if not isinstance(decoded, dict) or len(decoded) != 1:
            return False  # params, several formats, unified LLM input, nothing: MLflow's
        [(fmt, value)] = decoded.items()
        if fmt == DF_SPLIT:
            if not isinstance(value, dict) or set(value) != {"columns", "data"}:
                return False
            columns, rows = value["columns"], value["data"]
            if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
                return False
            if not isinstance(rows, list) or not all(
                isinstance(row, list) and len(row) == len(columns) for row in rows
            ):
                return False
            cells: Callable[[int], Any] = lambda i: (row[i] for row in rows)  # noqa: E731
        elif fmt == DF_RECORDS:
            if not isinstance(rows := value, list) or not rows or not isinstance(rows[0], dict):
                return False
            columns = list(rows[0])
            if not all(isinstance(row, dict) and list(row) == columns for row in rows):
                return False
            cells = lambda i: (row[columns[i]] for row in rows)  # noqa: E731
        else:
            return False  # tensor formats (inputs, instances): MLflow's, alone
        if not 0 < len(rows) <= self.max_rows or len(set(columns)) != len(columns):
            return False
        types = tuple(frozenset(type(cell) for cell in cells(i)) for i in range(len(columns)))
        if not all(kinds <= SCALARS for kinds in types):
            return False
        job.payload, job.rows = rows, len(rows)
        job.key = (fmt, tuple(columns), types)
        return True

    def _merged_frame(self, jobs: list[Job]) -> Any:
        """The DataFrame of the batch: MLflow's parsing of the merged JSON, or the CSV frames
        concatenated."""
        import pandas as pd

        fmt, columns, _ = jobs[0].key
        if fmt == CSV:
            frames = [job.payload for job in jobs]
            return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        rows = [row for job in jobs for row in job.payload]
        merged = {fmt: {"columns": list(columns), "data": rows} if fmt == DF_SPLIT else rows}
        parsed = parse_json_data(merged, self.model.metadata, self.schema)
        return parsed.data

    def _alone(self, job: Job) -> None:
        answer = mlflow_answer(job.body, job.content_type, self.model, self.schema, job.request_id)
        if answer.status == 200 and job.rows:
            answer = Answer(answer.body, answer.status, answer.media_type, job.rows)
        with self.stats.lock:
            self.stats.alone += 1
        job.deliver(answer)

    def _predict(self, jobs: list[Job]) -> None:
        import pandas as pd

        total = sum(job.rows for job in jobs)
        try:
            frame = self._merged_frame(jobs)
            if not isinstance(frame, pd.DataFrame) or len(frame) != total:
                raise ValueError("the merged input is not one row per request row")
            if self.takes_params:
                predictions = self.model.predict(frame, params=None)
            else:
                predictions = self.model.predict(frame)
            parts = split(predictions, [j.rows for j in jobs])
        except Exception:
            parts = None
        if parts is None:  # MLflow answers each request alone, errors and all
            with self.stats.lock:
                self.stats.fallbacks += len(jobs) > 1
            for job in jobs:
                self._alone(job)
            return
        with self.stats.lock:
            self.stats.batches += 1
            self.stats.merged_requests += len(jobs)
            self.stats.largest = max(self.stats.largest, len(frame))
        for job, part in zip(jobs, parts, strict=True):
            try:
                out = StringIO()
                scoring_server.predictions_to_json(part, out)
                answer = Answer(out.getvalue().encode(), 200, JSON, len(frame))
            except Exception:
                answer = mlflow_answer(
                    job.body, job.content_type, self.model, self.schema, job.request_id
                )
            job.deliver(answer)


def split(predictions: Any, sizes: list[int]) -> list[Any] | None:
    """``predictions`` cut into consecutive parts of ``sizes`` rows; None when it is not one
    prediction per row (the requests are then predicted alone)."""
    import numpy as np
    import pandas as pd

    total = sum(sizes)
    if len(sizes) == 1:
        return [predictions]
    bounds = [0]
    for size in sizes:
        bounds.append(bounds[-1] + size)
    pairs = list(itertools.pairwise(bounds))
    if isinstance(predictions, np.ndarray) and predictions.ndim >= 1:
        if predictions.shape[0] != total:
            return None
        return [predictions[a:b] for a, b in pairs]
    if isinstance(predictions, pd.DataFrame | pd.Series):
        if len(predictions) != total:
            return None
        return [predictions.iloc[a:b] for a, b in pairs]
    if isinstance(predictions, list) and len(predictions) == total:
        return [predictions[a:b] for a, b in pairs]
    return None
