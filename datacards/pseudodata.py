"""Pseudo-data: Poisson data drawn from the MC expectation, to run the data path before data.

The design's road to unblinding goes from pseudo-data (SP, VP) to data (VP) to data (SP).
:func:`draw_pseudo_data` draws, with a seed, one Poisson count per bin of ``xy_mt`` (every plane,
x, y and M_T bin, flow bins included: so every region A, B, C, D and every fit bin of SP and VP)
from the summed background MC, optionally plus ``inject`` times one signal dataset (a
signal-injected model). The result is a dataset of kind ``data`` named ``pseudodata_seed<SEED>``
appended to ``xy_mt``; the real data datasets are dropped from the metadata, so the data path
(:func:`.writer.write_datacards` with a data observation, region B of the signal plane blinded
unless ``unblind``) reads only the pseudo-data. Cards written from it are stamped ``PSEUDO-DATA``
(first header line) and ``index.json`` carries ``"pseudo_data": {...}`` (seed, injection,
VP closure): never confusable with data.

:func:`vp_closure` is the closure of the validation plane on the (pseudo-)data, the plane where
data may be looked at: per fit bin the observed B against ``A D / C`` of the observed A, C, D,
with Poisson uncertainties, their log-space pulls (:func:`.abcd.closure`) and a chi2 / p-value.

Example:
    >>> # inputs, datasets, rec = draw_pseudo_data(StatInputs.from_output(out), out["datasets"], seed=7)
    >>> # rec["name"]
    >>> # 'pseudodata_seed7'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import hist
import numpy as np

from svjscout.core.exceptions import DatacardError
from svjscout.core.regions import REGIONS

from .abcd import chi2_test, closure, predict
from .nonclosure import mt_bin_label
from .parents import StatInputs
from .regions import datasets_of_kind, region_yields

#: the first header line of every card written from pseudo-data
PSEUDO_TAG = "PSEUDO-DATA"


def pseudo_name(seed: int) -> str:
    """The name of the pseudo-data dataset of ``seed``."""
    return f"pseudodata_seed{int(seed)}"


def expectation(xy_mt, datasets: Mapping[str, Mapping], inject: float = 0.0, signal: str | None = None) -> np.ndarray:
    """The expected counts the pseudo-data is drawn from: summed background MC plus ``inject``
    times ``signal``, over the whole ``view(flow=True)`` of one dataset (plane, x, y, M_T).

    Raises:
        DatacardError: no background dataset; ``inject`` != 0 without a signal dataset; an
            unknown ``signal`` (names it).
    """
    names = list(xy_mt.axes["dataset"])
    bkg = datasets_of_kind(xy_mt, datasets, "background")
    if not bkg:
        raise DatacardError(f"pseudo-data: no background dataset (kind 'background') in {sorted(datasets)}")
    values = np.asarray(xy_mt.view(flow=True)["value"], float)
    off = 1 if xy_mt.axes["dataset"].traits.underflow else 0
    mu = sum(values[off + names.index(n)] for n in bkg)
    if inject:
        sigs = datasets_of_kind(xy_mt, datasets, "signal")
        if signal is None:
            if not sigs:
                raise DatacardError("pseudo-data: inject != 0 but no signal dataset (kind 'signal') to inject")
            signal = sigs[0]
        if signal not in sigs:
            raise DatacardError(f"pseudo-data: injected signal '{signal}' is not a signal dataset of xy_mt "
                                f"(have {sigs})")
        mu = mu + float(inject) * values[off + names.index(signal)]
    return np.clip(mu, 0.0, None)


def draw_pseudo_data(inputs, datasets: Mapping[str, Mapping], seed: int, inject: float = 0.0,
                     signal: str | None = None) -> tuple[StatInputs, dict, dict]:
    """Poisson pseudo-data from the MC expectation (:func:`expectation`), seeded.

    Args:
        inputs: :class:`.parents.StatInputs` or a bare ``xy_mt``.
        datasets: dataset metadata.
        seed: seed of ``numpy.random.default_rng``: the same seed gives the same counts.
        inject: signal strength injected (0: background only).
        signal: the injected signal dataset (default: the first signal, sorted).

    Returns:
        ``(inputs, datasets, record)``: ``xy_mt`` with the dataset ``pseudodata_seed<SEED>``
        appended (the others unchanged, so their parent records stay valid), the metadata without
        the real data datasets and with the pseudo-data (kind ``data``, ``pseudo_data: True``),
        and the record for ``index.json`` (``seed``, ``inject``, ``signal``, ``name``,
        ``replaced_data``).
    """
    inputs = StatInputs.of(inputs)
    xy_mt = inputs.xy_mt
    if inject and signal is None:
        sigs = datasets_of_kind(xy_mt, datasets, "signal")
        signal = sigs[0] if sigs else None
    mu = expectation(xy_mt, datasets, inject, signal)
    counts = np.random.default_rng(int(seed)).poisson(mu).astype(float)
    name = pseudo_name(seed)
    old = list(xy_mt.axes["dataset"])
    if name in old:
        raise DatacardError(f"pseudo-data: xy_mt already holds a dataset '{name}'")
    ax = xy_mt.axes["dataset"]
    new = hist.Hist(hist.axis.StrCategory([*old, name], growth=True, name="dataset"), *xy_mt.axes[1:],
                    storage=hist.storage.Weight())
    src = xy_mt.view(flow=True)
    dst = new.view(flow=True)
    off = 1 if ax.traits.underflow else 0
    for k in range(len(old)):
        dst[k] = src[off + k]
    dst["value"][len(old)] = counts
    dst["variance"][len(old)] = counts
    replaced = sorted(n for n, m in datasets.items() if m.get("kind") == "data")
    meta = {n: dict(m) for n, m in datasets.items() if m.get("kind") != "data"}
    meta[name] = {"kind": "data", "mzprime": None, "rinv": None, "xsec": None, "pseudo_data": True, "seed": int(seed)}
    record = {"seed": int(seed), "name": name, "inject": float(inject), "signal": signal if inject else None,
              "drawn_from": "Poisson of the background MC" + (f" + {inject:g} x {signal}" if inject else "")
              + " in every (plane, x, y, M_T) bin", "replaced_data": replaced}
    return StatInputs(new, inputs.parents), meta, record


def vp_closure(xy_mt, datasets: Mapping[str, Mapping], wp, groups: Sequence[Sequence[int]], plane: str = "VP",
               which: str = "data") -> dict:
    """Closure of ``plane`` on the (pseudo-)data at ``wp`` per fit bin (``groups`` of M_T bins).

    Per fit bin: observed A, B, C, D, the prediction ``A D / C`` with its Poisson uncertainty,
    ``delta = nhat / B - 1`` with its uncertainty and the log-space pull (:func:`.abcd.closure`);
    ``chi2``, ``ndf`` and ``pvalue`` over the bins (:func:`.abcd.chi2_test`).
    """
    y = region_yields(xy_mt, datasets, wp, plane=plane, which=which).merged([list(g) for g in groups])
    n, v = y.n, y.var
    nhat, var_nhat = predict(n[0], n[2], n[3], v[0], v[2], v[3])
    delta, sigma, pull = closure(nhat, var_nhat, n[1], v[1])
    chi2, ndf, p = chi2_test(pull)
    fin = lambda a: None if not np.isfinite(a) else float(a)  # noqa: E731
    bins = [{"bin": i, "mt": mt_bin_label(y.edges, i), **{r: float(n[k, i]) for k, r in enumerate(REGIONS)},
             "predicted_B": fin(nhat[i]), "predicted_B_err": fin(np.sqrt(var_nhat[i])), "delta": fin(delta[i]),
             "delta_err": fin(sigma[i]), "pull": fin(pull[i])} for i in range(n.shape[1])]
    return {"plane": plane, "bins": bins, "chi2": chi2, "ndf": ndf, "pvalue": fin(p)}


def blinded_b(obs: np.ndarray) -> np.ndarray:
    """Region B of a blinded observation: the background-only ABCD prediction ``A D / C`` of the
    observed A, C, D (shape ``(4, n)`` in, ``(n,)`` out; 0 where C is empty)."""
    nhat = predict(obs[0], obs[2], obs[3], 0, 0, 0)[0]
    return np.where(np.isfinite(nhat), nhat, 0.0)


def summary_lines(record: Mapping) -> list[str]:
    """Markdown lines of the pseudo-data record of ``index.json`` (what was drawn, VP closure)."""
    out = [f"Pseudo-data (seed {record['seed']}): {record['drawn_from']}; region B of the signal plane: "
           f"{record['b_observation']}."]
    c = record.get("vp_closure")
    if c:
        p = "n/a" if c["pvalue"] is None else f"{c['pvalue']:.3f}"
        out.append(f"VP closure on the pseudo-data: chi2 {c['chi2']:.2f} / {c['ndf']}, p-value {p}")
        for b in c["bins"]:
            pred = "n/a" if b["predicted_B"] is None else f"{b['predicted_B']:.1f} +- {b['predicted_B_err']:.1f}"
            pull = "n/a" if b["pull"] is None else f"{b['pull']:+.2f}"
            mc = (f"; MC: delta {b['mc_delta']:+.3g} +- {b['mc_delta_err']:.2g}"
                  if b.get("mc_delta") is not None and b.get("mc_delta_err") is not None else "")
            out.append(f"  {b['mt']}: B {b['B']:.0f} vs A*D/C {pred} (pull {pull}{mc})")
    return out
