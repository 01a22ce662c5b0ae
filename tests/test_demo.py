"""`asrd demo` checks what it needs before it starts."""

import sys

from asrd.cli import main as asrd_main


def test_demo_without_its_extra_fails_before_starting(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "jiwer", None)  # `import jiwer` fails, as when not installed
    assert asrd_main(["demo", "--workdir", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("asrd: error: asrd demo needs the `demo` extra") and "\n" not in err
    assert "pip install 'asrd[demo]'" in err
    assert not (tmp_path / "demo").exists()  # nothing was started: no sample audio, no run
