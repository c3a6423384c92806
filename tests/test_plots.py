"""The run's figures (issue 16): CMS style, PDF + PNG, labels and legends, the closure plot's numbers."""

import json

import numpy as np
import pytest
from conftest import embedded_file

pytestmark = pytest.mark.slow  # the figures of a whole main-job run (module fixture small_run, ~80 s)

# every figure of a run on the small job (2 signal points at different r_inv, one QCD sample)
RUN_FIGURES = (
    ["closure_SP", "closure_VP"]
    + [f"mt_{p}_region{r}" for p in ("SP", "VP") for r in "ABCD"]
    + ["xy_plane_SP_background", "xy_plane_SP_signal"]
    + ["control_met", "control_rt", "control_dphi_min", "control_j0_pt", "control_j1_pt"]
    + ["lund_plane_background", "lund_plane_signal", "lund_plane_ratio"]
    + [f"scan_{m}" for m in ("z_mean", "pvalue", "delta_total", "pull_total", "r_max", "neff_min", "failed_rules",
                             "rule_failures")]
    + ["limit_brazil_rinv0.3", "limit_brazil_rinv0.5", "limit_map_exp0"]
)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, toy_models):
    """run_job on the small job with a custom label; ``(outdir, {figure name: Figure}, cfg)``."""
    from svjscout.datacards.style import record_figures
    from svjscout.jobs.config import load_job
    from svjscout.jobs.main_job import run_job

    base = tmp_path_factory.mktemp("plots")
    job = base / "job.yaml"
    job.write_text(
        "datasets:\n"
        f"  svj_mz2000_rinv0.3: {{kind: signal, files: ['{embedded_file('svj_mz2000_rinv0.3.root')}']}}\n"
        f"  qcd: {{kind: background, files: ['{embedded_file('qcd.root')}']}}\n"
        f"  svj_mz3000_rinv0.5: {{kind: signal, files: ['{embedded_file('svj_mz3000_rinv0.5.root')}']}}\n"
        "analysis:\n"
        f"  lundnet_model: {toy_models[0]}\n"
        f"  twin_model: {toy_models[1]}\n"
        "  wp: [0.5, 0.5]\n"
        "  lumi: 59830.0\n"
        "executor: {name: iterative, chunksize: 10000}\n"
        "scan: {points: 9}\n"
        "plots: {label: Work in Progress, dpi: 160}\n"
        "datacards: {allow_unbacked: true}\n"  # the embedded sample backs no working point
    )
    cfg = load_job(job)
    out = base / "run"
    with record_figures() as figs:
        run_job(cfg, out, progress=False)
    return out, dict(figs), cfg


def _texts(fig) -> str:
    return " ".join(t.get_text() for ax in fig.axes for t in ax.texts)


def test_every_figure_as_pdf_and_png(small_run):
    out, figs, _ = small_run
    # the run's own figures, plus the fit validation's in validation/ (docs/validation.md)
    assert set(RUN_FIGURES) <= set(figs)
    for name in set(figs) - set(RUN_FIGURES):
        assert (out / "validation" / f"{name}.pdf").is_file() and (out / "validation" / f"{name}.png").is_file(), name
    for name in RUN_FIGURES:
        for ext in ("pdf", "png"):
            assert (out / f"{name}.{ext}").stat().st_size > 1000, f"{name}.{ext}"
        assert (out / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
    # no figure left behind from the old names
    assert not list(out.glob("mt_regions_*")) and not (out / "scan_passes.png").exists()


def test_png_resolution(small_run):
    from matplotlib.image import imread

    out, figs, _ = small_run
    for name in ("closure_SP", "mt_SP_regionB", "scan_delta_total", "limit_brazil_rinv0.3"):
        w_in = figs[name].get_size_inches()[0]
        # bbox_inches="tight" trims or adds a little; >= 150 dpi (here 160) is far from the old 60-80
        assert imread(out / f"{name}.png").shape[1] > 0.8 * 150 * w_in, name


def test_labels_legends_and_cms_label(small_run):
    out, figs, cfg = small_run
    for name, fig in figs.items():
        assert any(ax.get_xlabel() for ax in fig.axes) and any(ax.get_ylabel() for ax in fig.axes), name
        assert fig.axes[0].get_ylabel(), name
        texts = _texts(fig)
        assert "CMS" in texts and "Work in Progress" in texts, (name, texts)
        assert "Private Work" not in texts, name
        assert "13 TeV" in texts, name
        # MC-only run: every figure is labelled simulation
        assert "Simulation" in texts, name
        legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
        if not name.startswith(("xy_plane", "lund_plane", "limit_map", "wp_stability")):  # maps with a colour bar
            assert legends, f"{name}: no legend"
            assert all(leg.get_texts() or leg.get_title().get_text() for leg in legends), name
    # luminosity in fb^-1 from analysis.lumi (pb^-1) wherever events are counted
    for name in ("closure_SP", "mt_SP_regionB", "control_met", "scan_z_mean", "limit_brazil_rinv0.3"):
        assert "59.8 $\\mathrm{fb^{-1}}$" in _texts(figs[name]), name


def test_mt_spectra_per_gev_processes_and_signal_lines(small_run):
    out, figs, _ = small_run
    fig = figs["mt_SP_regionB"]
    ax = fig.axes[0]
    assert ax.get_ylabel() == "Events / GeV"
    assert "M_{T}" in ax.get_xlabel()
    leg = ax.get_legend()
    labels = [t.get_text() for t in leg.get_texts()]
    assert "QCD multijet" in labels
    assert any("m_{Z'}" in lab and "2 TeV" in lab and "0.3" in lab for lab in labels), labels
    assert not any(lab.startswith(("qcd_", "svj_")) for lab in labels), labels
    assert "overflow" in leg.get_title().get_text()
    # signals are lines in colours that no background fill uses
    import matplotlib.colors as mc

    fills = {mc.to_hex(p.get_facecolor()) for p in ax.patches if p.get_fill() and p.get_facecolor()[3] > 0}
    sig_lines = [p for p in ax.patches if not p.get_fill() and p.get_label() and "m_{Z'}" in p.get_label()]
    assert len(sig_lines) == 2
    assert not ({mc.to_hex(p.get_edgecolor()) for p in sig_lines} & fills)
    assert figs["control_met"].axes[0].get_ylabel() == "Events / 25 GeV"


def test_closure_plot_values_equal_abcd_prediction(small_run):
    from coffea.util import load

    from svjscout.datacards.abcd import abcd_from_yields
    from svjscout.datacards.regions import region_yields
    from svjscout.datacards.split import split_halves

    out, figs, _ = small_run
    output = load(out / "histograms.coffea")
    wp = (output["wp"]["x0"], output["wp"]["y0"])
    index = json.loads((out / "datacards" / "index.json").read_text())
    # per fit bin; with the scan's WP, on the half of the MC it was not chosen on (here: the configured WP)
    assert output["wp"]["split"] == index["provenance"]["split"]
    quote = (split_halves(output, seed=output["wp"]["split_seed"])["quote"]["hists"]["xy_mt"] if output["wp"]["split"]
             else output["hists"]["xy_mt"])
    for plane in ("SP", "VP"):
        t = abcd_from_yields(region_yields(quote, output["datasets"], wp, plane=plane).merged(index["mt_groups"]))
        width = np.diff(t.edges)
        ax, rax = figs[f"closure_{plane}"].axes[:2]
        obs = next(c for c in ax.containers if (c.get_label() or "").startswith("observed"))
        x, y = obs.lines[0].get_data()
        np.testing.assert_allclose(x, 0.5 * (t.edges[1:] + t.edges[:-1]))
        np.testing.assert_allclose(np.asarray(y) * width, t.n_B, rtol=1e-9)
        pred = next(p for p in ax.patches if p.get_gid() == "nhat_B")
        vals, edges, _ = pred.get_data()
        np.testing.assert_allclose(edges, t.edges)
        np.testing.assert_allclose(np.asarray(vals) * width, t.nhat_B, rtol=1e-9, equal_nan=True)
        assert ax.get_ylabel() == "Events / GeV" and "obs" in rax.get_ylabel() and "M_{T}" in rax.get_xlabel()
        labels = [t_.get_text() for t_ in ax.get_legend().get_texts()]
        assert any("non-closure" in lab for lab in labels), labels
        assert plane in ax.get_legend().get_title().get_text()
    assert index["plane"] == "SP" and len(index["nonclosure"]) == len(index["mt_groups"])


def test_scan_maps_have_meaningful_ranges(small_run):
    _, figs, _ = small_run
    im = figs["scan_delta_total"].axes[0].images[0]
    lo, hi = im.get_clim()
    assert lo == pytest.approx(-hi) and hi > 0  # diverging, symmetric around 0
    assert figs["scan_pvalue"].axes[0].images[0].get_clim() == (0.0, 1.0)
    # the chosen point is marked on every map
    for name in ("scan_z_mean", "scan_pvalue", "scan_delta_total", "scan_pull_total", "scan_r_max", "scan_neff_min",
                 "scan_failed_rules"):
        assert any("chosen WP" in (line.get_label() or "") for line in figs[name].axes[0].lines), name
    # one panel per rule, titled with how often it fails
    titles = [ax.get_title() for ax in figs["scan_rule_failures"].axes if ax.get_title()]
    assert len(titles) == 6 and all("fails at" in t for t in titles)
    assert any(t.startswith("statistics guard") for t in titles)
    # the maps say which events they show (with the scan's WP: the half it is chosen on)
    legend = figs["scan_z_mean"].axes[0].get_legend().get_title().get_text()
    assert ("half 'select'" in legend) == small_run[2].scan.enabled


def test_brazil_single_point_and_map(tmp_path):
    from svjscout.datacards import plot_limits
    from svjscout.datacards.style import PlotStyle, record_figures

    lim = {"svj_mz3000_rinv0.5": {"exp-2": 5.0, "exp-1": 7.0, "exp0": 10.0, "exp+1": 14.0, "exp+2": 19.0, "obs": None}}
    with record_figures() as figs:
        paths = plot_limits(lim, None, tmp_path, style=PlotStyle(lumi_pb=138000.0))
    assert sorted(p.rsplit("/", 1)[-1] for p in paths) == sorted(
        f"{n}.{e}" for n in ("limit_brazil_rinv0.5", "limit_map_exp0") for e in ("pdf", "png"))
    ax = figs["limit_brazil_rinv0.5"].axes[0]
    lo, hi = ax.get_xlim()
    assert hi - lo > 1000  # not a sliver: the point sits in a readable x range
    assert ax.get_ylim()[0] < 1 < ax.get_ylim()[1]  # r = 1 is on the plot
    leg = ax.get_legend()
    assert leg.get_bbox_to_anchor().x0 >= ax.get_window_extent().x1 - 1  # legend beside the axes
    # a 2 x 2 grid crossing r = 1 gets the contour
    grid = {f"svj_mz{m}_rinv{r}": {"exp-2": v / 2, "exp-1": v / 1.4, "exp0": v, "exp+1": v * 1.4, "exp+2": v * 2}
            for (m, r, v) in ((1000, 0.3, 0.3), (2000, 0.3, 3.0), (1000, 0.5, 0.5), (2000, 0.5, 5.0))}
    with record_figures() as figs:
        plot_limits(grid, None, tmp_path / "grid")
    ax = figs["limit_map_exp0"].axes[0]
    assert ax.collections and any("r = 1" in (line.get_label() or "") for line in ax.lines)


def _plotted_closure(fig):
    ax = fig.axes[0]
    obs = next(c for c in ax.containers if (c.get_label() or "").startswith("observed"))
    pred = next(p for p in ax.patches if p.get_gid() == "nhat_B")
    vals, edges, _ = pred.get_data()
    return np.asarray(obs.lines[0].get_data()[1]), np.asarray(vals), np.asarray(edges)


def test_closure_plot_on_a_realistic_toy(tmp_path):
    """A background with a defined prediction in every bin: the plotted points and line are n_B and
    nhat_B per GeV of the cards' fit bins; the SP band is the datacards' non-closure of each fit bin,
    the VP band the measured |delta|."""
    from svjscout.datacards import abcd_prediction, write_datacards
    from svjscout.datacards.style import PlotStyle, record_figures
    from svjscout.datacards.toys import realistic_toy
    from svjscout.jobs.report import closure_numbers, plot_closure

    h, ds = realistic_toy(n_mt=5, n_signal=2, with_data=False)
    wp = (0.5, 0.5)
    index = write_datacards(h, ds, wp, tmp_path)
    with record_figures() as figs:
        for plane in ("SP", "VP"):
            paths = plot_closure(h, ds, wp, tmp_path, plane, index=index, style=PlotStyle(lumi_pb=138000.0))
            assert [p.rsplit("/", 1)[-1] for p in paths] == [f"closure_{plane}.pdf", f"closure_{plane}.png"]
    from svjscout.datacards.abcd import abcd_from_yields
    from svjscout.datacards.regions import region_yields

    groups = index["mt_groups"]
    for plane in ("SP", "VP"):
        t = abcd_from_yields(region_yields(h, ds, wp, plane=plane).merged(groups))
        assert np.isfinite(t.nhat_B).all() and (t.nhat_B > 0).all()
        y_obs, y_pred, edges = _plotted_closure(figs[f"closure_{plane}"])
        np.testing.assert_allclose(edges, t.edges)
        np.testing.assert_allclose(y_obs * np.diff(edges), t.n_B, rtol=1e-9)
        np.testing.assert_allclose(y_pred * np.diff(edges), t.nhat_B, rtol=1e-9)
        ratio = next(c for c in figs[f"closure_{plane}"].axes[1].containers)
        np.testing.assert_allclose(ratio.lines[0].get_data()[1], t.n_B / t.nhat_B, rtol=1e-9)
    np.testing.assert_allclose(closure_numbers(h, ds, wp, "SP", index)["u"], index["nonclosure"])
    t_vp = abcd_prediction(h, ds, wp, plane="VP", which="background")
    np.testing.assert_allclose(closure_numbers(h, ds, wp, "VP")["u"], np.abs(t_vp.delta))
