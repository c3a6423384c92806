"""Repeated heavy-flavour decays (issue 30): several decays of each Pythia event's b and c hadrons.

After the detector fix, most of the QCD that passes the preselection carries *real* MET: the
neutrinos of semileptonic b- and c-hadron decays in low-pT-hat parents
(docs/generation_efficiency.md, section 6: 72 % of the yield and 95 % of sum W^2 from ~30 of
120,000 parents). Whether a parent gets that MET is decided by how its heavy hadrons decay, a cheap
step after the expensive ones (hard process, showers, multiparton interactions, hadronisation). So,
as Pythia's example ``main361`` (``main15`` in Pythia 8.2: "B decays could be repeated a number of
times for each event to improve statistics") does, and as b-physics productions do with repeated
hadronisation, the weakly decaying b and c hadrons are left undecayed by the event generator
(``mayDecay = off``) and each event with at least one of them is repeated ``n`` times: every repeat
decays all of the event's heavy hadrons anew (a second Pythia instance with the same decay
settings, ``ProcessLevel:all = off``, fed the hadrons; the full chain: b -> c -> ..., taus, K0s
with cTau < 10 mm as in CMS's settings), and carries 1/n of the event's weight. Events without a
heavy hadron are not repeated. For any observable f, the weighted sum over an event's repeats,
(w/n) sum_r f_r, is an unbiased estimate of w E[f | the event before heavy-flavour decays]: the
decays are independent given the hadrons, so the repeats are exact draws of the physical law (the
sample is the inline-decay sample's law, checked against Pythia's inline decays in
tests/test_repeats.py).

With n = 1 every event is decayed once by the second Pythia: the same events as with any n (the
event generator's random stream does not depend on n), each with one decay: the like-for-like
baseline of a measurement (docs/generation_efficiency.md, section 7).

The repeats of one event are its *copies* like the detector copies: they share ``parent`` (the
Kish N_eff counts parents) and differ in ``event``. The repeats must go through the parent
roulette (``roulette`` on, :mod:`svjscout.samples.efficiency`): a repeat with real MET is kept
with probability 1 (those are rare, ~3 % of the repeats have |sum pT(nu)| >= 30 GeV), one without
with the parent's probability / n, so that on average one repeat per parent without real MET goes
through pileup and detector, as without repeats (weight w / n / (p / n) = w / p). The gain: the
real-MET yield of an event with heavy flavour is averaged over n decays instead of one.
"""

from __future__ import annotations

from dataclasses import dataclass

import awkward as ak
import numpy as np

from svjscout.core.exceptions import GenerationError

#: the decay Pythia's seed: ``chunk_seed(seed + DECAY_SEED_OFFSET, chunk)`` (generate.chunk_seed)
DECAY_SEED_OFFSET = 15_485_863
#: weakly decaying heavy hadrons have cTau0 of 0.02-0.5 mm; resonances (B*, D*, J/psi, ...) ~0
WEAK_CTAU_MIN_MM = 1e-3
#: :func:`heavy_hadron_ids` of Pythia 8.317's table (tests/test_repeats.py checks it against the table)
HEAVY_HADRONS = (411, 421, 431, 511, 521, 531, 541, 4122, 4132, 4232, 4332, 4412, 4414, 4422, 4424, 4432,
                 4434, 4444, 5122, 5132, 5142, 5232, 5242, 5332, 5342, 5412, 5414, 5422, 5424, 5432, 5434,
                 5442, 5444, 5512, 5514, 5522, 5524, 5532, 5534, 5542, 5544, 5554)
#: both signs, sorted (for ``np.isin``)
HEAVY_CODES = np.array(sorted(HEAVY_HADRONS + tuple(-c for c in HEAVY_HADRONS)), dtype=np.int64)


def heavy_hadron_ids(particle_data) -> list[int]:
    """The weakly decaying b and c hadrons of Pythia's particle table (positive codes).

    A hadron with a b or c quark among its quark digits and cTau0 > :data:`WEAK_CTAU_MIN_MM`:
    D+, D0, D_s, B0, B+, B_s, B_c, the charm and bottom baryons; not the resonances, which decay
    strongly or electromagnetically into them (and keep decaying inline).
    """
    out = []
    for code in list(range(400, 600)) + list(range(4000, 5600)):
        if not (particle_data.isParticle(code) and particle_data.isHadron(code)):
            continue
        quarks = {(code // 10) % 10, (code // 100) % 10, (code // 1000) % 10}
        if quarks & {4, 5} and particle_data.tau0(code) > WEAK_CTAU_MIN_MM:
            out.append(code)
    return out


def stable_settings(ids: list[int]) -> list[str]:
    """Pythia lines that leave the heavy hadrons undecayed in the event generator."""
    return [f"{code}:mayDecay = off" for code in ids]


@dataclass
class Repeats:
    """The rows of a chunk after repetition: row r is repeat ``rep[r]`` of event ``origin[r]``.

    ``n_rep[e]``: how many repeats event e got (n with a heavy hadron, 1 without); a row's share of
    its event's weight is 1 / n_rep[origin].
    """

    origin: np.ndarray
    rep: np.ndarray
    n_rep: np.ndarray

    @property
    def share(self) -> np.ndarray:
        return 1.0 / self.n_rep[self.origin]


class DecayGun:
    """A Pythia instance that only decays: fed hadrons, returns their stable decay products."""

    def __init__(self, settings: list[str], seed: int):
        import pythia8mc  # generate extra

        self.pythia = pythia8mc.Pythia("", False)
        for line in list(settings) + ["ProcessLevel:all = off", f"Random:seed = {seed}"]:
            if not self.pythia.readString(line):
                raise GenerationError(f"decay repeats: Pythia rejected the setting {line!r}")
        if not self.pythia.init():
            raise GenerationError("decay repeats: the decay Pythia failed to initialise")
        self._mass: dict[int, float] = {}

    def decay(self, ids, px, py, pz) -> tuple[np.ndarray, np.ndarray]:
        """Decay the hadrons (one event's; on their mass shell, m0 of the table: weakly decaying
        hadrons have no width) once: (ids, 4-momenta (n, 4)) of the stable products.

        Raises GenerationError if Pythia fails (it does not for single hadron decays).
        """
        event = self.pythia.event
        event.reset()
        for code, x, y, z in zip(ids, px, py, pz):
            code = int(code)
            mass = self._mass.get(code)
            if mass is None:
                mass = self._mass[code] = self.pythia.particleData.m0(code)
            en = np.sqrt(x * x + y * y + z * z + mass * mass)
            event.append(code, 1, 0, 0, 0, 0, 0, 0, float(x), float(y), float(z), float(en), mass)
        if not self.pythia.next():
            raise GenerationError(f"decay repeats: Pythia could not decay {list(map(int, ids))}")
        out_id, out_p = [], []
        for particle in event.particles():
            if particle.isFinal():
                out_id.append(particle.id())
                out_p.append((particle.px(), particle.py(), particle.pz(), particle.e()))
        return np.asarray(out_id, dtype=np.int64), np.asarray(out_p, dtype=np.float64).reshape(-1, 4)


def repeat_decays(fs: dict[str, ak.Array], heavy: np.ndarray, n_repeats: int, gun: DecayGun,
                  charges) -> tuple[dict[str, ak.Array], Repeats]:
    """The chunk's final state ``fs`` with every event holding heavy hadrons repeated ``n_repeats`` times.

    Args:
        fs: the final state per event (``pt``, ``eta``, ``phi``, ``id``, ``charge``, ``pileup``),
            heavy hadrons undecayed (stable) in it.
        heavy: sorted array of the heavy hadrons' codes, both signs.
        n_repeats: repeats per event with a heavy hadron (>= 1).
        gun: the decay Pythia.
        charges: ``charges(ids) -> int array`` (the generator's charge table).

    Returns the rows' final state (each row: the event's other particles and one decay of all its
    heavy hadrons; events without heavy hadrons once, unchanged apart from the particles' order)
    and the :class:`Repeats` bookkeeping.
    """
    counts = ak.to_numpy(ak.num(fs["id"]))
    flat_id = ak.to_numpy(ak.flatten(fs["id"]))
    is_heavy = ak.unflatten(np.isin(flat_id, heavy), counts)
    n_heavy = ak.to_numpy(ak.sum(is_heavy, axis=1))
    n_rep = np.where(n_heavy > 0, n_repeats, 1).astype(np.int64)
    origin = np.repeat(np.arange(len(counts)), n_rep)
    rep = np.arange(len(origin)) - np.repeat(np.cumsum(n_rep) - n_rep, n_rep)
    hadrons = {k: fs[k][is_heavy] for k in ("id", "pt", "eta", "phi")}
    h_id = ak.to_list(hadrons["id"])
    h_pt, h_eta, h_phi = (ak.to_list(hadrons[k]) for k in ("pt", "eta", "phi"))
    prod_id, prod_p, prod_n = [], [], np.zeros(len(origin), dtype=np.int64)
    for row in np.flatnonzero(n_heavy[origin] > 0):
        ev = origin[row]
        pt, eta, phi = np.asarray(h_pt[ev]), np.asarray(h_eta[ev]), np.asarray(h_phi[ev])
        ids, p4 = gun.decay(h_id[ev], pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta))
        prod_id.append(ids)
        prod_p.append(p4)
        prod_n[row] = len(ids)
    ids = np.concatenate(prod_id) if prod_id else np.zeros(0, dtype=np.int64)
    p4 = np.concatenate(prod_p) if prod_p else np.zeros((0, 4))
    pt = np.hypot(p4[:, 0], p4[:, 1])
    prod = {"pt": pt, "eta": np.arcsinh(p4[:, 2] / np.maximum(pt, 1e-9)), "phi": np.arctan2(p4[:, 1], p4[:, 0]),
            "id": ids, "charge": np.asarray(charges(ids)), "pileup": np.zeros(len(ids), dtype=bool)}
    out = {}
    for key, value in fs.items():
        base = value[~is_heavy][origin]
        dtype = ak.to_numpy(ak.flatten(value[:0])).dtype
        add = ak.unflatten(np.asarray(prod[key]).astype(dtype), prod_n)
        out[key] = ak.concatenate([base, add], axis=1)
    return out, Repeats(origin=origin, rep=rep, n_rep=n_rep)
