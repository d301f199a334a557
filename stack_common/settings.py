"""The base of every service's settings class: typed, read once, one clear line for a bad value.

Each service has one class (``tracking_server/settings.py``, ``serving/settings.py``,
``training/settings.py``, ``promotion/settings.py``, ``backup/settings.py``,
``local_stack/settings.py``; the tracking server's two jobs have small ones beside them). Every
field is one environment variable (``env("NAME", default)``, the name exactly as in
``.env.example``); values worked out from several variables are properties.
``tests/unit/stack_common/test_env_example.py`` checks ``.env.example`` against these classes.

Rules shared by every class:

* Empty means unset: ``NAME=`` (an empty line of a ``.env`` template) or only blanks gives the
  default, for booleans too (``MLFLOW_SERVE_ARTIFACTS=`` used to turn the proxy off).
* :meth:`StackSettings.from_env` reads and checks everything once, at start; a bad value is one
  :class:`~stack_common.errors.ConfigError` line naming the variable, the value and the fix,
  never pydantic's traceback.
* Nothing is read at import time and nothing is written to ``os.environ``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import AfterValidator, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from stack_common.errors import ConfigError

# Defaults shared by several services, each written once.
DEFAULT_TRACKING_URI = "http://127.0.0.1:5000"
DEFAULT_MODEL_NAME = "grades-regressor"
DEFAULT_EXPERIMENT_NAME = "grades"
DEFAULT_TRACKING_PORT = 5000
DEFAULT_SERVING_PORT = 8080
DEFAULT_ADMIN_USERNAME = "admin"


def env(name: str, default: Any = PydanticUndefined, **kwargs: Any) -> Any:
    """A field read from the environment variable ``name`` (constraints as for pydantic's
    ``Field``: ``ge=1``, ``default_factory=...``)."""
    return Field(default, validation_alias=name, **kwargs)


def _resolved(path: Path) -> Path:
    return path.expanduser().resolve()


# A folder given relative to where the command runs, made absolute once at start.
ResolvedPath = Annotated[Path, AfterValidator(_resolved)]
# A path that may start with ``~``.
UserPath = Annotated[Path, AfterValidator(Path.expanduser)]


def env_name(field: FieldInfo) -> str | None:
    """The environment variable a field is read from (None: not one of ours)."""
    alias = field.validation_alias
    return alias if isinstance(alias, str) else None


class _Environment(PydanticBaseSettingsSource):
    """The variables of ``environ`` that name a field, blank ones left out (empty = unset)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.environ = environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        name = env_name(field)
        raw = self.environ.get(name, "") if name else ""
        if not raw.strip():
            return None, name or field_name, False
        # Blanks around a value are a typo, except in a secret, which is passed on as it is.
        secret = "SecretStr" in str(field.annotation)
        return (raw if secret else raw.strip()), name or field_name, False

    def __call__(self) -> dict[str, Any]:
        values = {}
        for field_name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, field_name)
            if value is not None and env_name(field):
                values[key] = value
        return values


class StackSettings(BaseSettings):
    """One service's settings; build them with :meth:`from_env`."""

    # No env_ignore_empty: the stack's own source (_Environment) replaces pydantic's, and it
    # is what treats an empty variable as unset.
    # A field's description is the docstring under it
    # (tests/unit/stack_common/test_env_example.py checks every field has one).
    model_config = SettingsConfigDict(
        extra="ignore", frozen=True, validate_by_name=True, use_attribute_docstrings=True
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only keyword arguments and the process environment, by the same rules as from_env.
        return init_settings, _Environment(settings_cls, os.environ)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """The settings from ``environ`` (default: this process's), checked; ConfigError else."""
        environ = os.environ if environ is None else environ
        try:
            settings = cls.model_validate(_Environment(cls, environ)())
        except ValidationError as exc:
            raise ConfigError(describe(cls, exc)) from None
        settings.check()
        return settings

    def check(self) -> None:
        """Rules across fields, each failing with one ConfigError line (none by default)."""

    @classmethod
    def env_names(cls) -> dict[str, str]:
        """Field name -> the environment variable it is read from."""
        return {
            name: alias
            for name, field in cls.model_fields.items()
            if (alias := env_name(field)) is not None
        }


class DataDirSettings(StackSettings):
    """The one folder that holds the local stack's state (database, artifacts, caches, logs)."""

    stack_data_dir: ResolvedPath = env("STACK_DATA_DIR", Path(".stack"))
    """The folder of the local stack's state: database, artifacts, caches, logs."""

    @property
    def data_dir(self) -> Path:
        return self.stack_data_dir


class ClientSettings(DataDirSettings):
    """What every client of the tracking server reads (trainer, promotion, serving, users job)."""

    tracking_uri: str = env("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)
    """The tracking server's URL."""
    model_name: str = env("MODEL_NAME", DEFAULT_MODEL_NAME)
    """The registered model trained, promoted and served."""
    # How long a client waits for the tracking server before failing with one clear line.
    server_wait_s: float = env("SERVER_WAIT_SECONDS", 30.0, ge=0)
    """Seconds a client waits for the tracking server before failing."""


_PROBLEMS = {
    "int_parsing": "is not a whole number",
    "int_from_float": "is not a whole number",
    "float_parsing": "is not a number",
    "bool_parsing": "is not a boolean",
    "finite_number": "is not a number",
}


def describe(cls: type[BaseSettings], exc: ValidationError) -> str:
    """pydantic's first complaint as one line: ``NAME='value' <problem>; <fix>``."""
    error = exc.errors()[0]
    loc = error["loc"][0] if error["loc"] else ""
    field = cls.model_fields.get(str(loc))
    names = {env_name(f): f for f in cls.model_fields.values() if env_name(f)}
    field = names.get(str(loc), field)
    name = (env_name(field) if field else None) or str(loc).upper() or "a setting"
    raw = error.get("input")
    example = "" if field is None or field.default in (PydanticUndefined, None) else field.default
    kind = error["type"]
    ctx = error.get("ctx", {})
    if kind == "bool_parsing":
        return f"{name}={raw!r} is not a boolean; set it to true or false"
    fix = f"; set it to e.g. {example}" if example != "" else "; fix it or unset it (default)"
    if kind in _PROBLEMS:
        return f"{name}={raw!r} {_PROBLEMS[kind]}{fix}"
    if kind in ("greater_than_equal", "greater_than"):
        return f"{name}={raw} is below {ctx.get('ge', ctx.get('gt'))}{fix}"
    if kind in ("less_than_equal", "less_than"):
        return f"{name}={raw} is above {ctx.get('le', ctx.get('lt'))}{fix}"
    if kind == "literal_error":
        return f"{name}={raw!r} is not allowed; use one of {ctx.get('expected', '')}"
    message = " ".join(str(error["msg"]).split())
    if not error["loc"]:  # a rule across settings (a model validator): its message says it all
        return message.removeprefix("Value error, ")
    return f"{name}={raw!r}: {message}; fix it in .env or the environment"
