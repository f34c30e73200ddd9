"""`reg2rg readme`: the README's demo block rewritten from a summary.json, the run placed against the
committed seed spread figure by figure; bad input is one line and exit 2."""

from __future__ import annotations

from reg2rg_lib.cli import main
from reg2rg_lib.experiments.summary import write_summary
from reg2rg_lib.paths import RunPaths
from reg2rg_lib.report.results import README_END, README_START


def test_readme_command_writes_the_demo_block_from_the_summary(tmp_path, capsys):
    paths = RunPaths(tmp_path / "out")
    # full far below the committed demo seeds (benchmarks/seeds/demo.csv: region accuracy 0.986-1.000)
    write_summary(paths, "demo", {"full": {"region_accuracy": 0.5123, "BLEU-4": 0.3456, "METEOR": 0.5,
                                           "ROUGE-L": 0.5, "CE_micro_F1": 0.1}})
    readme = tmp_path / "README.md"
    readme.write_text(f"# kit\n{README_START}\nold 0.111\n{README_END}\n## kept\n")
    assert main(["readme", "--summary", str(paths.summary), "--readme", str(readme),
                 "--tables", str(tmp_path / "tables")]) == 0
    text = readme.read_text()
    assert "old 0.111" not in text and "0.512" in text and "0.346" in text and "0.5123" not in text
    assert text.startswith("# kit\n") and text.endswith("## kept\n")
    assert "`full` region_accuracy 0.512" in text and "inside the 95% prediction interval" in text
    out = capsys.readouterr().out
    assert str(readme) in out
    assert any(line.startswith("full") and "region_accuracy" in line and line.endswith("OUTSIDE")
               for line in out.splitlines())


def test_readme_command_bad_input_is_one_line_exit_2(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    assert main(["readme", "--summary", str(tmp_path / "missing.json"), "--readme", str(readme)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "missing.json" in err
    assert readme.read_text() == "no markers\n"
