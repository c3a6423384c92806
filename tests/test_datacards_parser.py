"""Datacard parser and validator: one planted defect per test (svjscout.datacards.parser)."""

import pytest

from svjscout.core.exceptions import DatacardError
from svjscout.datacards import parse_datacard, validate_datacard, write_datacards
from svjscout.datacards.parser import parse_text
from svjscout.datacards.toys import realistic_toy


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    h, ds = realistic_toy(n_mt=2, n_signal=1, n_background=1)
    out = tmp_path_factory.mktemp("p")
    idx = write_datacards(h, ds, (0.5, 0.5), out)
    return (out / "datacards" / idx["cards"][0]).read_text()


def _edit_row(text, key, col_of, new):
    """Replace the value of column (bin, proc) in row starting with ``key``."""
    lines = text.splitlines()
    card = parse_text(text)
    c = list(zip(card.col_bins, card.col_procs)).index(col_of)
    for i, ln in enumerate(lines):
        tok = ln.split()
        if tok and tok[0] == key:
            off = 2 if key not in ("rate",) else 1
            tok[off + c] = new
            lines[i] = " ".join(tok)
    return "\n".join(lines) + "\n"


def _problems(text):
    with pytest.raises(DatacardError) as e:
        validate_datacard(parse_text(text, "planted.txt"))
    return str(e.value)


def test_valid_card_passes_and_parses(text, tmp_path):
    p = tmp_path / "c.txt"
    p.write_text(text)
    card = parse_datacard(p)
    assert validate_datacard(p) == [] and validate_datacard(card) == []
    assert card.processes == ["sig", "bkg"] and card.ncols == 16 and len(card.rate_params) == 8
    assert card.comments and card.comments[0].startswith("Combine datacard")


def test_imax_mismatch(text):
    assert "imax is 9 but 8 bins" in _problems(text.replace("imax 8", "imax 9"))


def test_jmax_mismatch(text):
    assert "jmax is 2 but 2 processes" in _problems(text.replace("jmax 1", "jmax 2"))


def test_kmax_mismatch(text):
    msg = _problems(text.replace("kmax 3", "kmax 4"))
    assert "kmax is 4 but 3 nuisance" in msg and "lumi" in msg


def test_rateparam_unknown_bin(text):
    bad = text.replace("bkg_SP_A_1  rateParam  SP_A_1", "bkg_SP_A_1  rateParam  SP_X_1")
    assert "rateParam 'bkg_SP_A_1' refers to unknown bin 'SP_X_1'" in _problems(bad)


def test_rateparam_unknown_process(text):
    bad = text.replace("bkg_SP_C_0  rateParam  SP_C_0  bkg", "bkg_SP_C_0  rateParam  SP_C_0  qcd")
    assert "process 'qcd'" in _problems(bad)


def test_zero_rate_with_rateparam(text):
    bad = _edit_row(text, "rate", ("SP_C_1", "bkg"), "0")
    assert "rateParam 'bkg_SP_C_1' multiplies process 'bkg' in bin 'SP_C_1' whose rate is 0" in _problems(bad)


def test_duplicate_systematic_name(text):
    lines = text.splitlines()
    i = next(k for k, ln in enumerate(lines) if ln.startswith("lumi"))
    bad = "\n".join(lines[: i + 1] + [lines[i]] + lines[i + 1 :]).replace("kmax 3", "kmax 4")
    msg = _problems(bad)
    assert "systematic 'lumi' is declared 2 times" in msg and "kmax" not in msg


def test_duplicate_bin_name(text):
    lines = text.splitlines()
    i = next(k for k, ln in enumerate(lines) if ln.startswith("bin"))
    lines[i] = lines[i].replace("SP_B_0", "SP_A_0")
    msg = _problems("\n".join(lines))
    assert "bin 'SP_A_0' is declared 2 times" in msg


def test_duplicate_rateparam(text):
    extra = "bkg_SP_A_0 rateParam SP_A_0 bkg 5 [0,100]\n"
    assert "rateParam 'bkg_SP_A_0' is declared 2 times for process 'bkg' in bin 'SP_A_0'" in _problems(text + extra)


def test_systematic_column_count_mismatch(text):
    lines = text.splitlines()
    i = next(k for k, ln in enumerate(lines) if ln.startswith("nonclosure_bin1"))
    lines[i] = lines[i].rsplit(None, 1)[0]
    assert "systematic 'nonclosure_bin1' (lnN) has 15 values but there are 16 columns" in _problems("\n".join(lines))


def test_rate_row_column_count_mismatch(text):
    lines = text.splitlines()
    i = next(k for k, ln in enumerate(lines) if ln.startswith("rate "))
    lines[i] = lines[i] + " 1.0"
    assert "'rate' row has 17 columns but the 'bin' row has 16" in _problems("\n".join(lines))


def test_observation_count_mismatch(text):
    lines = text.splitlines()
    i = next(k for k, ln in enumerate(lines) if ln.startswith("observation"))
    lines[i] = lines[i].rsplit(None, 1)[0]
    assert "observation has 7 values but 8 bins" in _problems("\n".join(lines))


def test_formula_argument_unknown(text):
    bad = text.replace("bkg_SP_A_1,bkg_SP_D_1,bkg_SP_C_1", "bkg_SP_A_1,bkg_SP_D_1,bkg_SP_Q_1")
    assert "formula argument 'bkg_SP_Q_1'" in _problems(bad)


def test_invalid_lnn_value(text):
    bad = _edit_row(text, "lumi", ("SP_A_0", "sig"), "-0.5")
    assert "invalid lnN value '-0.5' for process 'sig' in bin 'SP_A_0'" in _problems(bad)


def test_unreadable_file(tmp_path):
    with pytest.raises(DatacardError, match="nope.txt"):
        parse_datacard(tmp_path / "nope.txt")
