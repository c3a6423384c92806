"""benchmarks/bench_background_mix.py: processes absent from the input are said so, not scored."""

from __future__ import annotations

import json

from conftest import benchmark_module, embedded_file


def _rows(tmp_path, names, capsys):
    folder = tmp_path / "_".join(names)
    folder.mkdir()
    for n in names:
        (folder / f"{n}.root").symlink_to(embedded_file(f"{n}.root"))
    out = folder / "rows.json"
    benchmark_module("bench_background_mix").main(["--files", str(folder), "--json", str(out)])
    text = capsys.readouterr().out
    return {(r["process"], r["plane"]): r for r in json.loads(out.read_text())}, text


def test_absent_processes_are_not_scored(tmp_path, capsys):
    rows, text = _rows(tmp_path, ["wjets"], capsys)
    for p in ("qcd", "ttbar", "zjets"):
        for plane in ("SP", "VP"):
            assert rows[(p, plane)]["verdict"] == "not in the input"
            assert "yield" not in rows[(p, plane)]
    assert rows[("wjets", "SP")]["n_eff"] > 10 and rows[("wjets", "SP")]["yield"] > 0
    assert "not in the input" not in rows[("wjets", "SP")]["verdict"]
    assert "| QCD | SP | - | - |" in text
    assert "QCD / ttbar in the SP: ours - (QCD or ttbar not in the input)" in text
    assert "inf" not in text


def test_a_process_row_does_not_depend_on_the_others(tmp_path, capsys):
    alone, _ = _rows(tmp_path, ["wjets"], capsys)
    both, _ = _rows(tmp_path, ["wjets", "zjets"], capsys)
    for plane in ("SP", "VP"):
        a, b = alone[("wjets", plane)], both[("wjets", plane)]
        assert (a["yield"], a["error"], a["n_eff"]) == (b["yield"], b["error"], b["n_eff"])
    assert both[("zjets", "SP")]["verdict"] != "not in the input"
