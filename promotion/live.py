"""The gate's live check and ``stack-registry live``: the figures :mod:`promotion.evidence`
works out, read through :mod:`promotion.live_source`, for the promote command and for people."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlflow.entities.model_registry import ModelVersion

from promotion import evidence as ev
from promotion.gate import GateDecision
from promotion.live_source import LiveMetricsError, read_samples
from promotion.settings import PromotionSettings


def rules(settings: PromotionSettings) -> ev.EvidenceRules:
    return ev.EvidenceRules(
        min_requests=settings.min_live_requests,
        max_error_rate=settings.max_live_error_rate,
        max_disagreement=settings.max_live_disagreement,
        max_mean_abs_difference=settings.max_live_mean_abs_difference,
    )


def live_check(
    settings: PromotionSettings,
    read: Callable[[str | None, str], list[ev.Sample]] = read_samples,
) -> Callable[[ModelVersion], GateDecision] | None:
    """The promote command's live check, or None when the gate asks for no live evidence.

    Metrics that cannot be read refuse like missing evidence (``--force`` still promotes)."""
    if not settings.asks_live_evidence:
        return None

    def check(mv: ModelVersion) -> GateDecision:
        try:
            samples = read(settings.live_metrics_url, mv.name)
        except LiveMetricsError as exc:
            return GateDecision(False, str(exc))
        return ev.judge(mv.version, ev.challenger_figures(samples, mv.version), rules(settings))

    return check


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def row(who: str, version: str, mode: str, figures: ev.Figures) -> dict[str, Any]:
    """One line of the side-by-side table (and of ``--json``)."""
    return {
        "who": who,
        "version": version,
        "mode": mode,
        "requests": int(figures.requests),
        "errors": int(figures.errors),
        "error_rate": figures.error_rate,
        "p50_seconds": figures.quantile(0.5),
        "p99_seconds": figures.quantile(0.99),
        "disagreement": figures.disagreement,
        "compared_labels": int(figures.compared_labels),
        "mean_abs_difference": figures.mean_abs_difference,
        "compared_values": int(figures.difference_count),
        "canary": figures.canary if who == "challenger" else "-",
    }


def rows(samples: list[ev.Sample], production: str | None) -> list[dict[str, Any]]:
    """Production's answers, then each challenger version: both modes, shadow, canary."""
    found = []
    if production is not None:
        found.append(
            row("production", production, "answers", ev.production_figures(samples, production))
        )
    for version in ev.challenger_versions(samples):
        if version == production:
            continue
        for mode in (None, "shadow", "canary"):
            figures = ev.challenger_figures(samples, version, mode)
            if mode is None or figures.requests:
                found.append(row("challenger", version, mode or "both", figures))
    return found


COLUMNS = (
    ("who", 10, "{}"),
    ("version", 7, "{}"),
    ("mode", 7, "{}"),
    ("requests", 8, "{}"),
    ("error_rate", 10, "rate"),
    ("p50_seconds", 7, "ms"),
    ("p99_seconds", 7, "ms"),
    ("disagreement", 12, "rate"),
    ("mean_abs_difference", 13, "num"),
    ("canary", 0, "{}"),
)
HEADINGS = {
    "error_rate": "errors",
    "p50_seconds": "p50 ms",
    "p99_seconds": "p99 ms",
    "mean_abs_difference": "mean |diff|",
}


def _cell(value: Any, kind: str) -> str:
    if kind == "rate":
        return ev.percent(value)
    if kind == "ms":
        return _ms(value)
    if kind == "num":
        return "-" if value is None else f"{value:.4g}"
    return str(value)


def table(found: list[dict[str, Any]]) -> list[str]:
    """The rows as aligned text lines, with a heading."""

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i < 3 else cell.rjust(width)
            for i, (cell, (_, width, _)) in enumerate(zip(cells, COLUMNS, strict=True))
        ).rstrip()

    lines = [line([HEADINGS.get(name, name) for name, _, _ in COLUMNS])]
    for found_row in found:
        lines.append(line([_cell(found_row[name], kind) for name, _, kind in COLUMNS]))
    return lines
