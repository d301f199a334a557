"""serving/nginx.conf.template, rendered by serving/front.py: every placeholder filled, and a
config nginx accepts with and without the njs error filter."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from serving.front import NGINX_TEMPLATE, UPSTREAM_IDLE_MS, FrontConfig, NginxTemplate, render
from serving.supervisor import DRAIN_S

NJS_MODULE = Path("/usr/lib/nginx/modules/ngx_http_js_module.so")


def _front_config(workers: int, canary_percent: float = 0.0) -> FrontConfig:
    return FrontConfig(
        "127.0.0.1",
        8080,
        workers,
        10,
        60,
        "production",
        "nginx",
        str(NJS_MODULE),
        canary_percent=canary_percent,
        challenger_workers=2,
    )


def test_template_placeholders_are_well_formed() -> None:
    """A stray percent sign (``%x`` without braces, ``%{``, ``%-``) would be a placeholder
    string.Template cannot read; ``is_valid`` finds it before a render does."""
    template = NginxTemplate(NGINX_TEMPLATE.read_text())
    assert template.is_valid()
    assert "run_dir" in template.get_identifiers()


@pytest.mark.parametrize("filter_errors", [False, True])
@pytest.mark.parametrize("workers", [1, 3])
def test_rendered_config_has_no_unfilled_placeholder(
    tmp_path: Path, workers: int, filter_errors: bool
) -> None:
    conf = render(_front_config(workers), tmp_path, filter_errors)
    assert not re.findall(r"%\{?[A-Za-z_]\w*", conf)
    # One upstream server per slot; with two or more, the last stands by.
    standby = 1 if workers > 1 else 0
    assert conf.count("max_fails=0;") == workers - standby
    assert conf.count("max_fails=0 backup;") == standby
    assert f"worker_processes {max(1, workers - 1)};" in conf
    assert "keepalive_time" in conf
    # No idle connection to an old pool is left when it stops after the drain.
    assert f"keepalive_timeout {UPSTREAM_IDLE_MS}ms;" in conf
    assert UPSTREAM_IDLE_MS / 1000 < DRAIN_S
    assert ("js_body_filter" in conf) == filter_errors


def test_render_refuses_a_template_value_it_does_not_have(tmp_path: Path, monkeypatch) -> None:
    """substitute, not safe_substitute: a placeholder without a value fails loudly."""
    template = tmp_path / "nginx.conf.template"
    template.write_text(NGINX_TEMPLATE.read_text() + "# %{not_a_value}\n")
    monkeypatch.setattr("serving.front.NGINX_TEMPLATE", template)
    with pytest.raises(KeyError, match="not_a_value"):
        render(_front_config(2), tmp_path, filter_errors=False)


def test_a_canary_gets_its_share_and_production_as_backup(tmp_path: Path) -> None:
    conf = render(_front_config(3, canary_percent=12.5), tmp_path, filter_errors=False)
    assert "12.5% canary;" in conf
    assert '"canary:/invocations" canary;' in conf  # only predictions go to the canary
    upstream = conf[conf.index("upstream challenger {") :]
    upstream = upstream[: upstream.index("}")]
    assert upstream.count("canary-") == 2 and "slot-" not in upstream
    # Whatever the canary does not answer with success, production answers (MLflow answers 400
    # for a model that raises).
    canary = conf[conf.index("location @canary {") :]
    canary = canary[: canary.index("}")]
    assert "proxy_intercept_errors on;" in canary
    assert "error_page 400 " in canary and " 500 " in canary and "= @fallback;" in canary
    assert "proxy_pass http://scoring;" in conf[conf.index("location @fallback {") :]
    without = render(_front_config(3), tmp_path, filter_errors=False)
    assert "upstream challenger" not in without and "default production;" in without


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx not installed")
@pytest.mark.skipif(not NJS_MODULE.is_file(), reason="nginx's njs module not installed")
@pytest.mark.parametrize("canary_percent", [0.0, 10.0])
def test_nginx_accepts_the_config_with_the_error_filter(
    tmp_path: Path, canary_percent: float
) -> None:
    (tmp_path / "tmp").mkdir()
    shutil.copyfile(Path(NGINX_TEMPLATE).with_name("errors.js"), tmp_path / "errors.js")
    config = _front_config(2, canary_percent)
    (tmp_path / "nginx.conf").write_text(render(config, tmp_path, filter_errors=True))
    check = subprocess.run(
        ["nginx", "-t", "-q", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr
