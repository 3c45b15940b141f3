"""Plugin discovery: entry points, the autoload switch, duplicates, unknown names, packaging."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from cmhbench.errors import PluginError, UnknownNameError
from cmhbench.hookspecs import hookimpl
from cmhbench.plugins import create_plugin_manager, build_registry, get_registry
from cmhbench.registry import MethodSpec

ROOT = Path(__file__).resolve().parent.parent
BUILTIN = {"teachers": {"djsrh"}, "strategies": {"ukd", "labels"}, "students": {"dcmh"}, "datasets": {"synthetic", "wiki"}}


def test_builtins_come_through_the_entry_point_group():
    registry = get_registry()
    for kind, names in BUILTIN.items():
        assert names <= set(registry.table(kind)), kind
    spec = registry.method("teacher", "djsrh")
    assert spec.source.startswith("cmhbench:") and "djsrh" in spec.source
    assert "ICCV 2019" in spec.paper


def test_autoload_switch_leaves_only_core_datasets(monkeypatch):
    monkeypatch.setenv("CMHBENCH_DISABLE_PLUGIN_AUTOLOAD", "1")
    registry = get_registry()
    assert list(registry.teachers) == [] and list(registry.students) == []
    assert set(registry.datasets) == {
        "synthetic", "wiki", "mirflickr25k", "nus-wide-tc10", "nus-wide-tc21", "iapr-tc12", "mscoco", "raw"
    }


def test_named_plugins_load_even_with_autoload_off(monkeypatch):
    monkeypatch.setenv("CMHBENCH_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("CMHBENCH_PLUGINS", "cmhbench_plugins.teachers.djsrh, plugins_for_tests")
    registry = get_registry()
    assert {"djsrh", "raising"} <= set(registry.teachers)
    assert "tiny" in registry.datasets


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownNameError, match="did you mean djsrh"):
        get_registry().method("teacher", "djsr")
    with pytest.raises(UnknownNameError, match="unknown student 'zzz'"):
        get_registry().method("student", "zzz")


def test_wildcard_listing():
    assert [s.name for s in get_registry().teachers.list("dj*")] == ["djsrh"]
    assert get_registry().students.list("nothing*") == []


class DuplicatePlugin:
    @hookimpl
    def cmhbench_register_methods(self, register):
        from cmhbench_plugins.teachers.djsrh import DJSRH, DJSRHConfig

        register(MethodSpec(name="djsrh", kind="teacher", build=DJSRH, config=DJSRHConfig, paper="copy"))


def test_duplicate_method_name_is_an_error_not_last_wins():
    pm = create_plugin_manager(autoload=True, extra=())
    pm.register(DuplicatePlugin(), name="copycat")
    pm.cmhbench_sources["copycat"] = ("copycat-dist", "1.0")
    with pytest.raises(PluginError, match="registered twice"):
        build_registry(pm)


class MisspeltHook:
    @hookimpl
    def cmhbench_register_method(self, register):  # missing "s"
        pass


def test_misspelt_hook_fails_loudly(monkeypatch):
    import types

    module = types.ModuleType("misspelt_plugin")
    module.cmhbench_register_method = MisspeltHook.cmhbench_register_method.__get__(MisspeltHook())
    monkeypatch.setitem(sys.modules, "misspelt_plugin", module)
    with pytest.raises(PluginError, match="unknown hook"):
        create_plugin_manager(autoload=False, extra=("misspelt_plugin",))


def test_plugin_that_fails_to_import_is_named(monkeypatch):
    with pytest.raises(PluginError, match="no_such_module_xyz"):
        create_plugin_manager(autoload=False, extra=("no_such_module_xyz",))


class RaisingRegistration:
    @hookimpl
    def cmhbench_register_methods(self, register):
        raise RuntimeError("broken plugin")


def test_plugin_raising_while_registering_is_named():
    pm = create_plugin_manager(autoload=False, extra=())
    pm.register(RaisingRegistration(), name="raiser")
    pm.cmhbench_sources["raiser"] = ("raiser", "")
    with pytest.raises(PluginError, match="'raiser' raised while registering: RuntimeError: broken plugin"):
        build_registry(pm)


def test_non_editable_wheel_ships_builtins_and_entry_points(tmp_path):
    # Build from a clean copy: setuptools never empties build/, so stale files there would hide a
    # package missing from pyproject's list.
    src = tmp_path / "src"
    for part in ("cmhbench", "plugins"):
        shutil.copytree(ROOT / part, src / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / part, src / part)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("cmhbench-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(zf.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    for module in ("teachers/djsrh.py", "strategies/ukd.py", "strategies/labels.py", "students/dcmh.py"):
        assert f"cmhbench_plugins/{module}" in names
    # Every module of the harness is shipped (pyproject lists the packages one by one).
    sources = {str(p.relative_to(ROOT)) for p in (ROOT / "cmhbench").rglob("*.py")}
    assert sources <= names, sorted(sources - names)
    assert "djsrh = cmhbench_plugins.teachers.djsrh" in entry_points
    assert not any(n.startswith("plugins/") for n in names), "the generic name 'plugins' must not be installed"


@pytest.mark.slow
def test_example_plugin_installs_into_a_fresh_venv_and_registers(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    child_site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    # The new venv (no pip of its own) sees this environment's packages (pip, setuptools, torch,
    # cmhbench) through a site dir, so that only the example package is installed into it.
    parent_site = sysconfig.get_paths()["purelib"]
    Path(child_site, "zz_parent_env.pth").write_text(f"import site; site.addsitedir({parent_site!r})\n")
    env = {**os.environ, "PIP_NO_INDEX": "1"}
    env.pop("CMHBENCH_PLUGINS", None)
    env.pop("CMHBENCH_DISABLE_PLUGIN_AUTOLOAD", None)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         str(ROOT / "examples" / "cmhbench-plugin-example")],
        check=True, capture_output=True, env=env,
    )
    out = subprocess.run(
        [str(python), "-m", "cmhbench.cli", "list", "teachers", "--json"],
        check=True, capture_output=True, text=True, env=env,
    ).stdout
    teachers = {t["name"]: t for t in json.loads(out)["teachers"]}
    assert teachers["example"]["source"] == "cmhbench-plugin-example:example"
    assert teachers["example"]["version"] == "0.1.0"
    assert "djsrh" in teachers
    run = subprocess.run(
        [str(python), "-m", "cmhbench.cli", "run", "--teacher", "example", "--student", "none", "--bits", "8",
         "--dataset", "synthetic", "--results", str(tmp_path / "results"), "-q"],
        capture_output=True, text=True, env=env,
    )
    assert run.returncode == 0, run.stderr
    (result,) = (tmp_path / "results").rglob("*.json")
    data = json.loads(result.read_text())
    assert data["key"]["teacher"] == "example"
    assert data["environment"]["plugins"]["example"] == "cmhbench-plugin-example 0.1.0"
    assert data["metrics"]["i2t"]["map"] > 0.25  # above the synthetic data's chance level (~0.21)
    # This environment, where the example is not installed, does not see it.
    assert "example" not in get_registry().teachers
