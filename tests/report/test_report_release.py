"""Where the authors' release is looked for, and the rows that stand where its (and the paper's) numbers
would."""

from __future__ import annotations

import pandas as pd

from reg2rg_lib.paths import REPO_ROOT
from reg2rg_lib.report.release import RELEASE_ENV, find_release, paper_rows, with_release_rows
from reg2rg_lib.report.tables import CTRG


def test_release_is_a_parameter_else_the_environment_else_the_profile_default(tmp_path, monkeypatch):
    monkeypatch.delenv(RELEASE_ENV, raising=False)
    default = find_release(None, "release/Reg2RG_ctrg")
    assert (
        default.path == REPO_ROOT / "release" / "Reg2RG_ctrg" and default.how == "profile figures.release_dir"
    )
    monkeypatch.setenv(RELEASE_ENV, str(tmp_path))
    assert find_release(None, "release/Reg2RG_ctrg").found == tmp_path.resolve()  # the environment wins
    explicit = find_release(tmp_path / "nowhere", "release/Reg2RG_ctrg")  # ... and a parameter wins over it
    assert explicit.how == "parameter" and explicit.found is None
    assert find_release("", "release/Reg2RG_ctrg").path is None  # "": deliberately left out


def test_a_missing_release_and_the_untyped_paper_numbers_get_labelled_rows(tmp_path, monkeypatch):
    monkeypatch.delenv(RELEASE_ENV, raising=False)
    kit = pd.DataFrame([{"dataset": "embedded benchmark test", "model": "kit: full", "source": "kit run",
                         "BLEU-4": 0.5}])
    out = with_release_rows(kit, "table1", find_release(tmp_path / "absent", ""), CTRG)
    sources = list(out["source"])
    assert sum("not typed in" in s and "Table 1" in s for s in sources) == 2  # one per dataset of the paper
    assert any(s.startswith(f"authors' release: not found at {tmp_path / 'absent'}") for s in sources)
    assert out["BLEU-4"].isna().sum() == 3 and out.iloc[-1]["BLEU-4"] == 0.5  # no number invented
    found = with_release_rows(kit, "table1", find_release(tmp_path, ""), CTRG)
    assert not any("not found" in s for s in found["source"])
    assert all(r["model"] == "Reg2RG (paper, as printed)" for r in paper_rows("table3"))
