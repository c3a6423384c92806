# Shared by the Combine scripts (sourced, not run): checks and the cards of a run's index.json.
# Needs only bash and a Python 3 with its json module ($PYTHON, default python3): it runs in a
# plain CMSSW/Combine shell where svjscout is not importable.

# require_combine: exit 3 unless combine and text2workspace.py are on PATH.
require_combine() {
  local tool
  for tool in combine text2workspace.py; do
    command -v "$tool" >/dev/null 2>&1 || {
      echo "ERROR: '$tool' is not on PATH. Set up CMS Combine first (cmsenv in a CMSSW area with" >&2
      echo "       HiggsAnalysis/CombinedLimit built, or the standalone build's environment)." >&2
      exit 3; }
  done
}

# listed_cards CARDS_DIR: fill the array LISTED with the card paths (relative to CARDS_DIR) of
# CARDS_DIR/index.json; exit 2 without an index or with an empty one.
listed_cards() {
  local index="$1/index.json"
  [[ -f "$index" ]] || { echo "ERROR: no $index (write the cards with svjscout run or svjscout datacards)" >&2; exit 2; }
  mapfile -t LISTED < <("${PYTHON:-python3}" -c 'import json, sys
for meta in json.load(open(sys.argv[1]))["points"].values():
    print(meta["card"])' "$index")
  [[ ${#LISTED[@]} -gt 0 ]] || { echo "ERROR: $index lists no cards" >&2; exit 2; }
}

# quick_limit LIMITS_JSON POINT KEY: print the quick limit KEY (e.g. exp0) of POINT from a limits.json
# written by svjscout (nothing, exit status 0, when the file, the point or the value is absent).
quick_limit() {
  [[ -f "$1" ]] || return 0
  "${PYTHON:-python3}" -c 'import json, sys
try:
    v = json.load(open(sys.argv[1])).get(sys.argv[2], {}).get(sys.argv[3])
except (OSError, ValueError, AttributeError):
    v = None
if isinstance(v, (int, float)) and v > 0:
    print(repr(float(v)))' "$1" "$2" "$3"
}

# has_option NAME ARGS...: true if ARGS contain the combine option NAME (as NAME or NAME=value).
has_option() {
  local name="$1" a; shift
  for a in "$@"; do [[ "$a" == "$name" || "$a" == "$name="* ]] && return 0; done
  return 1
}

# count_expected LOG: number of expected-limit lines ("Expected 50.0%: r < ...") in a combine log.
count_expected() {
  grep -cE '^Expected +[0-9.]+%: *r < *[0-9]' "$1" 2>/dev/null || true
}

# nonmonotone_searches LOG: print one line per crossing search of a `combine -v 2` AsymptoticLimits log
# whose profiled delta(nll) is not monotone in r (a fit Combine did not converge: its bisection then
# goes the wrong way and that quantile is wrong); nothing when all searches are clean.
nonmonotone_searches() {
  "${PYTHON:-python3}" -c 'import re, sys
names = ["exp0", "exp-2", "exp-1", "exp+1", "exp+2"]
searches = []
for line in open(sys.argv[1], errors="replace"):
    if "Will search for NLL crossing" in line:
        searches.append([])
    m = re.search(r"At r = ([-+0-9.eE]+):\s*delta\(nll\) = ([-+0-9.eE]+)", line)
    if m and searches:
        searches[-1].append((float(m.group(1)), float(m.group(2))))
for name, pts in zip(names, searches):
    pts.sort()
    bad = [(r, d) for i, (r, d) in enumerate(pts) if any(d > d2 + 0.01 for _, d2 in pts[i + 1:])]
    if bad:
        print("%s: failed fit(s) at %s" % (name, ", ".join("r=%.5g (delta nll %.4g)" % b for b in bad)))' "$1"
}
