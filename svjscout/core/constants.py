"""Constants of the analysis that more than one stage uses, each defined once."""

from __future__ import annotations

#: Run-2 integrated luminosity of the search, pb^-1 (2016-2018, 138 fb^-1).
LUMI_RUN2_PB = 138_000.0
#: lnN of the Run-2 luminosity uncertainty on the signal (1.6 %, CMS-LUM-17-003/18-002/19-005 combined).
LUMI_UNCERTAINTY = 1.016
#: Mean number of pileup interactions overlaid by the generator (Run-2 average).
DEFAULT_PILEUP = 35.0
#: Signal systematics in the cards: a region's effect is pruned below this many event-correlated
#: MC standard deviations ...
PRUNE_SIGMA = 2.0
#: ... or when its largest |effect| is below this.
MIN_EFFECT = 1e-3
#: Kish N_eff of a channel below which its signal MC statistics is a gmN (Poisson) term, not lnN
#: (Combine's autoMCStats threshold).
MCSTAT_NEFF_MIN = 10.0
