"""The headless package (CLI, training, seeding, coreset, interop) imports and runs without napari or Qt: a server or
a CI job installs it without a display stack. Every module is imported with the GUI packages blocked."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCKED = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "superqt", "magicgui", "vispy")
#: the start of both child scripts: an import hook that refuses the GUI packages
BLOCKER = textwrap.dedent(f"""
    import sys

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {BLOCKED!r}:
                raise ImportError(f"{{name}} is blocked")
            return None

    sys.meta_path.insert(0, Block())
""")


def test_every_headless_module_imports_with_napari_and_qt_blocked() -> None:
    script = BLOCKER + textwrap.dedent(f"""
        import importlib, pkgutil
        import medlsam_training
        failed = []
        for m in pkgutil.walk_packages(medlsam_training.__path__, "medlsam_training."):
            if m.name.endswith("__main__"):
                continue
            try:
                importlib.import_module(m.name)
            except ImportError as exc:
                failed.append(f"{{m.name}}: {{exc}}")
        from typer.testing import CliRunner
        from medlsam_training.cli import app
        result = CliRunner().invoke(app, ["--help"])
        assert result.exit_code == 0, result.output
        leaked = sorted(k for k in sys.modules if k.split(".")[0] in {BLOCKED!r})
        print("FAILED" if failed or leaked else "OK", failed, leaked)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1].startswith("OK"), out.stdout[-2000:]


def test_the_blocker_would_catch_a_gui_import() -> None:
    """The check can fail: the plugin package does import Qt."""
    script = BLOCKER + textwrap.dedent("""
        try:
            import medlsam_plugins.cam_dock  # noqa: F401
        except ImportError as exc:
            print("blocked:", exc)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert "blocked:" in out.stdout, out.stdout + out.stderr[-2000:]
