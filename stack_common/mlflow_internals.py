"""Every private MLflow name the stack uses, in one place.

MLflow releases monthly, and anything with a leading underscore (or a function the stack
replaces at run time) can move or change shape in any release. Code elsewhere in the stack
imports such names from here, never from ``mlflow`` directly, so an upgrade means reading this
one module and running ``tests/unit/test_mlflow_internals.py``, whose test for each name says
what changed when it fails.

Each entry says what the stack uses it for. A speed-up that patches MLflow checks here that
MLflow still has the shape it expects and otherwise leaves MLflow's own path in place, with one
warning line.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)
