"""Shared fixtures: the embedded sample, small ONNX models built with onnx.helper, job configs."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("SVJSCOUT_NO_PROGRESS", "1")

ROOT = Path(__file__).resolve().parent.parent
EMBEDDED = ROOT / "samples" / "embedded"
#: source folder of each layer of svjscout (pyproject.toml's package-dir), bottom first
LAYERS = {"core": "svjscout/core", "samples": "samples", "processors": "processors", "models": "models",
          "datacards": "datacards", "jobs": "jobs"}


def lay_out_package(dest: Path) -> Path:
    """A copy of svjscout's Python sources laid out as the installed package, ``dest/svjscout/<layer>/...``.

    The layers live in sibling folders mapped by pyproject.toml's package-dir; tools that find a
    package by walking one folder (import-linter's grimp, mypy) read this copy. Returns ``dest/svjscout``.
    """
    tree = dest / "svjscout"
    tree.mkdir()
    shutil.copy(ROOT / "svjscout" / "__init__.py", tree / "__init__.py")
    shutil.copy(ROOT / "svjscout" / "py.typed", tree / "py.typed")
    for layer, folder in LAYERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            copy = tree / layer / path.relative_to(ROOT / folder)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, copy)
    return tree


def pytest_collection_modifyitems(config, items):
    """The facility tests (marker ``facility``) run only when asked for by name (``-m facility``).

    pyproject's addopts keep them out with ``-m 'not facility'``, but a ``-m`` on the command line
    replaces that one: ``python -m pytest -m "not slow"`` (the fast run) must not pull them in.
    """
    if "facility" in (config.option.markexpr or ""):
        return
    facility = [item for item in items if item.get_closest_marker("facility")]
    if facility:
        config.hook.pytest_deselected(items=facility)
        items[:] = [item for item in items if not item.get_closest_marker("facility")]


def benchmark_module(name: str):
    """The script ``benchmarks/NAME.py`` imported as a module (the benchmarks are not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def embedded_file(name: str) -> str:
    path = EMBEDDED / name
    if not path.exists():
        raise FileNotFoundError(f"embedded sample file {path} is missing; run samples/embedded/make.sh")
    return str(path)


def _linear_sigmoid_model(path, inputs, outputs, features, model_kind):
    """An ONNX graph of fixed small linear maps + sigmoid with svjscout metadata."""
    import onnx
    from onnx import TensorProto, helper

    from svjscout.models.export import write_metadata

    nodes, inits, graph_inputs, graph_outputs = [], [], [], []
    if model_kind == "lundnet":
        n_feat = len(features)
        w = np.linspace(0.3, -0.2, n_feat).astype(np.float32).reshape(n_feat, 1)
        graph_inputs = [helper.make_tensor_value_info("lund", TensorProto.FLOAT, ["N", "L", n_feat]),
                        helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", "L"])]
        inits = [helper.make_tensor("w", TensorProto.FLOAT, [n_feat, 1], w.ravel()),
                 helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
                 helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])]
        nodes = [
            helper.make_node("MatMul", ["lund", "w"], ["proj3"]),  # N, L, 1
            helper.make_node("Squeeze", ["proj3", "neg1"], ["proj"]),
            helper.make_node("Mul", ["proj", "mask"], ["masked"]),
            helper.make_node("ReduceSum", ["masked", "axes"], ["num"], keepdims=0),
            helper.make_node("ReduceSum", ["mask", "axes"], ["den0"], keepdims=0),
            helper.make_node("Max", ["den0", "one"], ["den"]),
            helper.make_node("Div", ["num", "den"], ["mean"]),
            helper.make_node("Sigmoid", ["mean"], ["score"]),
        ]
        inits.append(helper.make_tensor("neg1", TensorProto.INT64, [1], [-1]))
        graph_outputs = [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])]
    else:
        n = len(features)
        rng = np.random.default_rng(3)
        scale = np.array([1 / 300, 0.1, 3, -1, 0.3, -0.3, -0.3, 2, 1, 1, 2, 2], np.float32)[:n]
        for name, sign in (("x", 1.0), ("y", -1.0)):
            w = (scale * (1 + 0.3 * sign * rng.standard_normal(n))).astype(np.float32).reshape(n, 1)
            inits += [helper.make_tensor(f"w_{name}", TensorProto.FLOAT, [n, 1], w.ravel()),
                      helper.make_tensor(f"b_{name}", TensorProto.FLOAT, [1], [-2.0])]
            nodes += [helper.make_node("MatMul", ["features", f"w_{name}"], [f"m_{name}"]),
                      helper.make_node("Add", [f"m_{name}", f"b_{name}"], [f"a_{name}"]),
                      helper.make_node("Sigmoid", [f"a_{name}"], [f"s_{name}"]),
                      helper.make_node("Flatten", [f"s_{name}"], [f"f_{name}"], axis=0),
                      helper.make_node("Squeeze", [f"f_{name}", "zero"], [name])]
            graph_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N"]))
        inits.append(helper.make_tensor("zero", TensorProto.INT64, [1], [0]))
        graph_inputs = [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", n])]
    graph = helper.make_graph(nodes, model_kind, graph_inputs, graph_outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    write_metadata(path, {"features": list(features), "model": model_kind, "training": {"kind": "test fixture"}})
    return str(path)


@pytest.fixture(scope="session")
def toy_models(tmp_path_factory):
    """(lundnet.onnx, twin.onnx): fixed linear+sigmoid models with correct metadata."""
    from svjscout.processors.features import EVENT_FEATURES
    from svjscout.processors.lund import LUND_FEATURES

    d = tmp_path_factory.mktemp("models")
    lund = _linear_sigmoid_model(d / "lundnet_toy.onnx", None, None, LUND_FEATURES, "lundnet")
    twin = _linear_sigmoid_model(d / "twin_toy.onnx", None, None, EVENT_FEATURES, "twin")
    return lund, twin


@pytest.fixture()
def small_job(tmp_path, toy_models):
    """A job config over three embedded datasets with the toy models."""
    from svjscout.jobs.config import load_job

    job = tmp_path / "job.yaml"
    job.write_text(
        "datasets:\n"
        f"  svj_mz2000_rinv0.3: {{kind: signal, files: ['{embedded_file('svj_mz2000_rinv0.3.root')}']}}\n"
        f"  qcd: {{kind: background, files: ['{embedded_file('qcd.root')}']}}\n"
        f"  svj_mz3000_rinv0.5: {{kind: signal, files: ['{embedded_file('svj_mz3000_rinv0.5.root')}']}}\n"
        "analysis:\n"
        f"  lundnet_model: {toy_models[0]}\n"
        f"  twin_model: {toy_models[1]}\n"
        "  wp: [0.5, 0.5]\n"
        "executor: {name: iterative, chunksize: 10000}\n"
        "datacards: {allow_unbacked: true}\n"  # the embedded sample backs no working point
    )
    return load_job(job)


def rewrite_file(src: str, dst, rename: dict | None = None, drop: tuple = (), modify=None, n: int | None = None,
                 keep_runs: bool = True) -> str:
    """Copy a scouting file with branches renamed/dropped/modified (for bad-input tests).

    ``drop`` names flat branches; ``modify(cols, pf)`` gets the other branches (numpy, or zipped
    collections such as the vertices) and the PF candidates' fields; ``rename`` maps branch or
    collection names (the PF collection's too) to new ones."""
    import awkward as ak
    import uproot

    from svjscout.samples.skim import collections_of

    rename = rename or {}
    with uproot.open(src) as f:
        arrays = f["Events"].arrays(library="ak", entry_stop=n)
        runs = f["Runs"].arrays(library="np") if keep_runs else None
        meta = str(f["svjscout_meta"])
    cols = collections_of(arrays[[k for k in arrays.fields if k not in drop]])
    pf_name = next(k for k in ("ScoutingPFCandidate", "ScoutingParticle") if k in cols)
    coll = cols.pop(pf_name)
    pf = {k: coll[k] for k in coll.fields}
    if modify:
        modify(cols, pf)
    out_cols = {rename.get(k, k): v for k, v in cols.items()}
    out_cols[rename.get(pf_name, pf_name)] = ak.zip(pf)
    with uproot.recreate(dst) as g:
        types = {k: (v.type.content if isinstance(v, ak.Array) else v.dtype) for k, v in out_cols.items()}
        g.mktree("Events", types).extend(out_cols)
        if runs is not None:
            g.mktree("Runs", {k: v.dtype for k, v in runs.items()}).extend(runs)
        g["svjscout_meta"] = meta
    return str(dst)


def assert_same_output(a: dict, b: dict) -> None:
    """Two processor outputs have the same histograms (values and variances) and cutflows.

    Raw counts must be identical. Sums of weights must agree to floating-point rounding (relative
    1e-12): the embedded QCD sample is pT-hat biased and resampled, so its weights differ event by
    event, and a different chunking adds them in a different order (unweighted samples still come
    out bit-identical: sums of integers are exact).
    """
    assert set(a["hists"]) == set(b["hists"])
    for name in a["hists"]:
        va, vb = a["hists"][name].view(flow=True), b["hists"][name].view(flow=True)
        np.testing.assert_allclose(va.value, vb.value, rtol=1e-12, atol=0, err_msg=name)
        np.testing.assert_allclose(va.variance, vb.variance, rtol=1e-12, atol=0, err_msg=name)
    for ds in a["cutflow"]:
        assert np.array_equal(a["cutflow"][ds]["raw"], b["cutflow"][ds]["raw"])
        np.testing.assert_allclose(a["cutflow"][ds]["weighted"], b["cutflow"][ds]["weighted"], rtol=1e-12, atol=0)


def with_executor(cfg, **executor):
    """A copy of a job config with some ``executor`` keys changed."""
    return cfg.model_copy(update={"executor": cfg.executor.model_copy(update=executor)})


#: A one-M_T-bin ABCD card as the writer lays it out: observation {a} {b} {c} {d}, signal {s} in B,
#: the B rate {bpred} (the prediction A D / C), a 5 % non-closure (tests of the validation).
ONE_BIN_ABCD = """imax 4
jmax 1
kmax 1
----
shapes * * FAKE
----
bin SP_A_0 SP_B_0 SP_C_0 SP_D_0
observation {a} {b} {c} {d}
----
bin SP_A_0 SP_A_0 SP_B_0 SP_B_0 SP_C_0 SP_C_0 SP_D_0 SP_D_0
process sig bkg sig bkg sig bkg sig bkg
process 0 1 0 1 0 1 0 1
rate 0 {a} {s} {bpred} 0 {c} 0 {d}
----
nonclosure_bin0 lnN - - - 1.05 - - - -
bkg_SP_A_0 rateParam SP_A_0 bkg 1 [0.1,10]
bkg_SP_C_0 rateParam SP_C_0 bkg 1 [0.1,10]
bkg_SP_D_0 rateParam SP_D_0 bkg 1 [0.1,10]
bkg_SP_B_0 rateParam SP_B_0 bkg (@0*@1/@2) bkg_SP_A_0,bkg_SP_D_0,bkg_SP_C_0
"""
