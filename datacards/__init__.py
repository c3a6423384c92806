"""ABCD background prediction, working-point scan, Combine datacards and quick limits.

Modules (one concept each):

* :mod:`.regions`      -- ``xy_mt`` access, working-point snapping, A/B/C/D yields via cumulative sums
* :mod:`.parents`      -- parent-aware variances of regions and M_T groups (detector copies);
                          :class:`StatInputs`, the statistics inputs passed explicitly
* :mod:`.settings`     -- one settings model per stage: datacards, scan, validation
* :mod:`.abcd`         -- ABCD prediction per M_T bin, closure, chi2 test
* :mod:`.significance` -- modified binned Asimov significance, signal rescaling
* :mod:`.scan`         -- vectorised working-point grid scan and selection
* :mod:`.nonclosure`   -- per-bin non-closure uncertainties (methods max, sp, vp, quadrature, vp_data)
* :mod:`.writer`       -- Combine text datacards + index.json, M_T-bin merging
* :mod:`.systematics`  -- signal systematics in the cards (variations, MC statistics, luminosity)
* :mod:`.parser`       -- datacard parser and validator
* :mod:`.likelihood`   -- the card's likelihood (Poisson x lnN x rateParams) and iminuit fits
* :mod:`.limits`       -- asymptotic CLs limits (quick, in package)
* :mod:`.combine`      -- limits from real Combine output files
* :mod:`.plots`        -- scan heat maps, Brazil bands, 2D limit map
* :mod:`.toys`         -- synthetic ``xy_mt`` histograms (tests, benchmarks)

See docs/datacards.md for formulas and conventions.
"""

from .abcd import ABCDTable, abcd_prediction
from .combine import collect_combine_limits, read_limit_file
from .limits import card_limits, quick_limits
from .nonclosure import nonclosure_uncertainties
from .parents import ParentRecords, StatInputs
from .parser import Datacard, parse_datacard, validate_datacard
from .plots import plot_limits, plot_scan_heatmaps
from .regions import check_mt_abcd, mt_abcd_at, region_yields, yields_from_mt_abcd
from .scan import ScanResult, ScanRules, scan_working_points, write_scan
from .settings import DatacardSettings, ScanSettings, ValidationSettings
from .systematics import SignalSystematics, plot_systematics, signal_systematics, systematics_config
from .validation import write_validation
from .writer import write_datacards

__all__ = [
    "ABCDTable",
    "Datacard",
    "DatacardSettings",
    "ParentRecords",
    "ScanResult",
    "ScanRules",
    "ScanSettings",
    "StatInputs",
    "ValidationSettings",
    "SignalSystematics",
    "abcd_prediction",
    "card_limits",
    "check_mt_abcd",
    "mt_abcd_at",
    "collect_combine_limits",
    "nonclosure_uncertainties",
    "parse_datacard",
    "plot_limits",
    "plot_scan_heatmaps",
    "plot_systematics",
    "quick_limits",
    "read_limit_file",
    "region_yields",
    "scan_working_points",
    "signal_systematics",
    "systematics_config",
    "validate_datacard",
    "write_datacards",
    "write_validation",
    "write_scan",
    "yields_from_mt_abcd",
]
