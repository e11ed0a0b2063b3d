"""The run folder's one home: its file names defined once, no private names across modules, atomic writes and
checkpoint listing."""

import ast
from pathlib import Path

import pytest
import torch

from tuneavideo import runfolder
from tuneavideo.runfolder import atomic_write, checkpoint_step, checkpoints, latest_checkpoint, save_checkpoint

PACKAGE = Path(runfolder.__file__).resolve().parent
MODULES = sorted(PACKAGE.glob("*.py"))
NAMES = (runfolder.CONFIG, runfolder.SOURCE, runfolder.ADAPTER, runfolder.INVERSION, runfolder.INVERSIONS, runfolder.LOG,
         runfolder.CHECKPOINTS, runfolder.SAMPLES, runfolder.EDITS)


def code_strings(tree: ast.AST):
    """The string constants of a module's code (docstrings are prose, not names in use)."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.value


@pytest.mark.parametrize("module", [m for m in MODULES if m.name != "runfolder.py"], ids=lambda m: m.name)
def test_run_folder_names_are_defined_once(module):
    """No other module spells a run folder's file name, or joins a path with one of its folder names."""
    tree = ast.parse(module.read_text())
    for text in code_strings(tree):
        for name in NAMES:
            assert not (text == name and "." in name) and not text.startswith(name + "/"), \
                f"{module.name} spells {name!r}; import it from runfolder"
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant):
            assert node.right.value not in NAMES, f"{module.name} joins a path with {node.right.value!r}; import it from runfolder"


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.name)
def test_no_module_imports_another_modules_private_names(module):
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
            assert not private, f"{module.name} imports {private} from .{node.module}"


def test_atomic_write_keeps_the_old_file_when_a_write_fails(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("old")

    def fails(tmp):
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(path, fails)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    atomic_write(path, lambda tmp: tmp.write_text("new"))
    assert path.read_text() == "new"


def test_checkpoints_are_listed_by_step_and_stray_names_left_alone(tmp_path):
    folder = tmp_path / runfolder.CHECKPOINTS
    folder.mkdir()
    for name in ("step-9.pt", "step-10.pt", "step-abc.pt", "notes.pt"):
        (folder / name).write_bytes(b"x")
    assert [p.name for p in checkpoints(tmp_path)] == ["step-9.pt", "step-10.pt"]
    assert checkpoint_step(latest_checkpoint(tmp_path)) == 10
    save_checkpoint(tmp_path, 11, {"step": 11})
    assert sorted(p.name for p in folder.iterdir()) == ["notes.pt", "step-11.pt", "step-abc.pt"]
    assert torch.load(folder / "step-11.pt", weights_only=True) == {"step": 11}
