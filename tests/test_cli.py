"""The command-line layer: scripts are thin wrappers over stylegan_t2i.cli, the console entry
points exist and exit 0, and the built-in demo data is found where an installed package can
write. (.ci/check_install runs the commands from a real non-editable install.)"""
import ast
import importlib
import re
import sys
from pathlib import Path

import pytest

from stylegan_t2i.cli import common, console
from stylegan_t2i.data import demo_scenes

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([REPO / "train_progan.py", REPO / "generate.py", *(REPO / "tools").glob("*.py"),
                  *(REPO / "benchmarks").glob("*.py"), *(REPO / "datasets").glob("*.py")])
SCRIPT_NAMES = {"train_progan", "generate", "tools", "benchmarks", "datasets"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_scripts_import_only_the_package_and_never_edit_sys_path(script):
    tree = ast.parse(script.read_text())
    for node in ast.walk(tree):
        roots = ([a.name.split(".")[0] for a in node.names] if isinstance(node, ast.Import) else
                 [(node.module or "").split(".")[0]] if isinstance(node, ast.ImportFrom) and not node.level else [])
        assert not SCRIPT_NAMES & set(roots), f"{script.name}:{node.lineno} imports a script"
        if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", None) == "sys":
            pytest.fail(f"{script.name}:{node.lineno} touches sys.path")


def entry_points() -> dict[str, str]:
    """name -> 'module:function' of setup.py's console_scripts."""
    return dict(re.findall(r'"(stylegan-t2i-[\w-]+) = ([\w.]+:\w+)"', (REPO / "setup.py").read_text()))


def test_every_console_command_points_at_a_callable_and_every_command_module_has_one():
    points = entry_points()
    assert {"stylegan-t2i-train", "stylegan-t2i-generate", "stylegan-t2i-ddpm", "stylegan-t2i-evaluate",
            "stylegan-t2i-compare"} <= set(points)
    for target in points.values():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), target
    cli_modules = {p.stem for p in (REPO / "stylegan_t2i" / "cli").glob("*.py")} - {"__init__", "common",
                                                                                   "run_setup", "console"}
    assert cli_modules == {t.split(":")[1] for t in points.values() if t.startswith("stylegan_t2i.cli.console:")}


def test_a_console_command_runs_its_main_and_exits_0(monkeypatch, capsys):
    """The wrapper pip writes calls sys.exit(command()): it must return None, not main's result."""
    monkeypatch.setattr(sys, "argv", ["stylegan-t2i-plot-run", "--help"])
    with pytest.raises(SystemExit) as e:
        console.plot_run()
    assert e.value.code == 0 and "usage: stylegan-t2i-plot-run" in capsys.readouterr().out
    monkeypatch.setattr(importlib.import_module("stylegan_t2i.cli.plot_run"), "main", lambda: Path("x.png"))
    assert console.plot_run() is None


def test_demo_root_is_the_env_var_then_the_clone_then_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv(demo_scenes.DEMO_DIR_ENV, raising=False)
    assert demo_scenes.default_demo_root() == REPO / "datasets" / "demo"
    monkeypatch.setenv(demo_scenes.DEMO_DIR_ENV, str(tmp_path / "mine"))
    assert demo_scenes.default_demo_root() == tmp_path / "mine"
    monkeypatch.delenv(demo_scenes.DEMO_DIR_ENV)
    # An installed copy: site-packages/stylegan_t2i/data/demo_scenes.py, no datasets/ beside it.
    monkeypatch.setattr(demo_scenes, "__file__", str(tmp_path / "site-packages/stylegan_t2i/data/demo_scenes.py"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert demo_scenes.default_demo_root() == tmp_path / "cache" / "stylegan_t2i" / "demo"


def test_demo_data_says_where_it_goes_and_an_unwritable_folder_is_one_line(monkeypatch, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(demo_scenes.DEMO_DIR_ENV, str(blocker / "demo"))
    with pytest.raises(SystemExit) as e:
        common.demo_data_dirs()
    assert "generating the built-in demo dataset in" in capsys.readouterr().out
    message = str(e.value)
    assert "\n" not in message and message.startswith("error: cannot write the demo dataset to")
    assert demo_scenes.DEMO_DIR_ENV in message and "--image_dir" in message
