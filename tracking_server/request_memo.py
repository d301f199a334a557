"""Store reads that MLflow's authorization and the handler repeat, done once per request.

With basic auth on, an authenticated request reads the same rows more than once: MLflow's
``before_request`` hook reads the user's row in ``sender_is_admin`` and again to look up the
user's grants, and its experiment validators read the experiment (by name or id) that the
handler then reads again to answer. On ``GET /api/2.0/mlflow/experiments/get-by-name`` those
repeats were about a third of the request's time in Flask (py-spy, docs/security.md).

:class:`RequestMemo` remembers the answers of a few read methods for the rest of one request,
and only where nothing in that request can change them:

* during the ``before_request`` hooks of every request (authorization only reads), and
* for the whole of a ``GET`` or ``HEAD`` request (MLflow's GET handlers only read).

A write request (POST, PATCH, DELETE) forgets what it read once its hooks are done, so its
handler reads afresh. Nothing outlives the request: the memo lives in Flask's ``g``, so the next
request asks the database again, and a changed grant or user row is seen at once (unlike the
credential cache, which MLflow keeps for ``MLFLOW_AUTH_CACHE_TTL_SECONDS``). A read that raises
is not remembered.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Hashable
from typing import Any

logger = logging.getLogger(__name__)

MEMO_KEY = "_stack_request_memo"
READ_ONLY_METHODS = frozenset({"GET", "HEAD"})
# The reads remembered, by store: the auth store's user row, the tracking store's experiment.
AUTH_STORE_READS = ("get_user",)
TRACKING_STORE_READS = ("get_experiment", "get_experiment_by_name")


def _current_memo() -> dict[Hashable, Any] | None:
    from flask import g, has_request_context

    if not has_request_context():
        return None
    memo: dict[Hashable, Any] | None = g.get(MEMO_KEY)
    return memo


def memoised(name: str, read: Callable[..., Any]) -> Callable[..., Any]:
    """``read``, answered from the current request's memo when it asked the same before."""
    if getattr(read, "__stack_memoised__", False):
        return read

    @functools.wraps(read)
    def remembered(*args: Any, **kwargs: Any) -> Any:
        memo = _current_memo()
        if memo is None:
            return read(*args, **kwargs)
        key = (name, args, tuple(sorted(kwargs.items())))
        try:
            return memo[key]
        except KeyError:
            pass
        except TypeError:  # an argument that cannot be a key: ask the store
            return read(*args, **kwargs)
        value = read(*args, **kwargs)
        memo[key] = value
        return value

    remembered.__stack_memoised__ = True  # type: ignore[attr-defined]
    return remembered


def memoise_reads(store: Any, names: tuple[str, ...]) -> None:
    """Wrap these read methods of this store instance (the class and other stores untouched)."""
    for name in names:
        read = getattr(store, name, None)
        if read is None:
            logger.warning("no per-request memo for %s.%s: MLflow has no such method", store, name)
            continue
        setattr(store, name, memoised(f"{type(store).__name__}.{name}", read))


def open_memo() -> None:
    """First ``before_request`` hook: a fresh memo for this request."""
    from flask import g

    setattr(g, MEMO_KEY, {})


def close_memo_unless_read_only() -> None:
    """Last ``before_request`` hook: a write request's handler reads afresh."""
    from flask import g, request

    if request.method not in READ_ONLY_METHODS:
        g.pop(MEMO_KEY, None)


def install(flask_app: Any) -> None:
    """Memoise the reads of MLflow's auth and tracking stores, and bracket the app's
    ``before_request`` hooks (MLflow's and ours, all registered by now) with the memo's."""
    from mlflow.server import auth as mlflow_auth

    from stack_common.mlflow_internals import tracking_store

    flask_app.before_request_funcs.setdefault(None, []).insert(0, open_memo)
    flask_app.before_request(close_memo_unless_read_only)
    memoise_reads(mlflow_auth.store, AUTH_STORE_READS)
    memoise_reads(tracking_store(), TRACKING_STORE_READS)
