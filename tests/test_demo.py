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


def test_demo_runs_with_the_config_file_it_is_given(tmp_path, capsys):
    """`asrd demo -c FILE` layers the file under the demo's own keys, as every command does:
    here its preset keeps every row, the silent ones too."""
    conf = tmp_path / "demo.yaml"
    conf.write_text("merge:\n  preset: none\nrun:\n  num_shards: 5\n")
    assert asrd_main(["demo", "-c", str(conf), "--workdir", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "quality preset 'none' kept 12, dropped 0" in out
