#!/usr/bin/env python3
"""Score a detector on a subset of the Numenta Anomaly Benchmark with NAB's own scorer.

NAB (numenta/NAB on GitHub) is not on PyPI and is not vendored here:
point ``--nab-repo`` at a checkout of it. Nothing in that checkout is modified;
the script builds a throwaway NAB workspace in a temporary directory:

    TMP/nab/                      copy of the checkout's scorer package
    TMP/data/<subset>             the subset's data files (from the checkout)
    TMP/labels/combined_windows.json   the checkout's windows, restricted to the subset
    TMP/config/profiles.json      the checkout's three scoring profiles
    TMP/results/<det>/<dir>/<det>_<file>.csv   our results and each published detector's

and then drives ``nab.runner.Runner`` exactly as NAB's ``run.py --optimize
--score --normalize`` does: threshold optimisation per detector and profile
(over the subset), scoring at that threshold, and normalisation
``100 * (raw - null) / (perfect - null)``, where ``null`` is the null detector's
raw score on the same subset and ``perfect`` is the number of anomaly windows
in the subset times the profile's tpWeight. Every published detector in the
checkout's results/ is re-scored with that same procedure on the same subset,
so the numbers are comparable with ours. The whole-corpus published numbers
(results/final_results.json) are copied for reference only: they are not
comparable with subset scores.

Our detector's output: one CSV per data file, at its NAB-relative path under
``--detector-results`` (e.g. DIR/realKnownCause/machine_temperature_system_failure.csv),
with columns ``timestamp,value,anomaly_score``: one row per data row,
timestamps as written in the data file, anomaly_score in [0, 1]. The files
present define the subset.

Compatibility: NAB's scorer (nab/{runner,optimizer,scorer,sweeper,labeler,
corpus,util}.py) only imports pandas, numpy and python-dateutil (simplejson is
optional), and runs unchanged on the pandas 2.x pinned in requirements.txt; no
shim or patch is applied. Its detectors (which need old packages) are never
imported. Check: this procedure run over all 58 files reproduces
results/final_results.json for null, numenta, windowedGaussian and ARTime
(all three profiles) to 1e-6, except numenta's reward_low_FP_rate (63.21 here
vs 63.12 published): NAB's optimiser finds a better threshold (0.5431, raw
30.65) than the stale one in NAB's config/thresholds.json (0.5752, raw 30.43)
that the published number was scored with.
"""

import argparse
import contextlib
import csv
import importlib
import json
import math
import os
import shutil
import sys
import tempfile

PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
NAB_SCORER_MODULES = ("corpus", "labeler", "optimizer", "runner", "scorer",
                      "sweeper", "util")


def die(msg):
    print(f"nab_score.py: error: {msg}", file=sys.stderr)
    sys.exit(2)


def warn(msg):
    print(f"nab_score.py: warning: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------

def check_nab_repo(repo):
    for rel in ("nab/runner.py", "labels/combined_windows.json",
                "config/profiles.json", "data", "results"):
        if not os.path.exists(os.path.join(repo, rel)):
            die(f"{repo} does not look like a NAB checkout: {rel} is missing")
    with open(os.path.join(repo, "config", "profiles.json")) as f:
        profiles = json.load(f)
    if set(profiles) != set(PROFILES):
        die(f"unexpected profiles in {repo}/config/profiles.json: {sorted(profiles)}")
    with open(os.path.join(repo, "labels", "combined_windows.json")) as f:
        windows = json.load(f)
    return windows


def find_subset(results_dir, windows):
    """NAB-relative paths ('realKnownCause/x.csv') of the CSVs in results_dir."""
    if not os.path.isdir(results_dir):
        die(f"--detector-results {results_dir} is not a directory")
    subset = []
    for dirpath, dirnames, filenames in os.walk(results_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or not name.endswith(".csv"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, name), results_dir)
            rel = rel.replace(os.sep, "/")
            if rel not in windows:
                die(f"{os.path.join(results_dir, rel)}: '{rel}' is not a NAB data "
                    f"file (expected e.g. realKnownCause/machine_temperature_system_failure.csv)")
            subset.append(rel)
    if not subset:
        die(f"no CSV files under {results_dir}")
    return sorted(subset)


def read_csv_rows(path):
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        return header, list(reader)


def validate_ours(results_dir, nab_repo, subset):
    """Check each of our CSVs against its data file; exit with a clear message."""
    for rel in subset:
        ours = os.path.join(results_dir, rel)
        header, rows = read_csv_rows(ours)
        if header is None or [h.strip() for h in header[:3]] != ["timestamp", "value", "anomaly_score"]:
            die(f"{ours}: header must start with timestamp,value,anomaly_score, got {header}")
        _, data_rows = read_csv_rows(os.path.join(nab_repo, "data", rel))
        if len(rows) != len(data_rows):
            die(f"{ours}: {len(rows)} rows, but the data file has {len(data_rows)}")
        for i, (row, drow) in enumerate(zip(rows, data_rows), start=2):
            if len(row) < 3:
                die(f"{ours}:{i}: expected 3 columns, got {row}")
            if row[0] != drow[0]:
                die(f"{ours}:{i}: timestamp {row[0]!r} does not match the data "
                    f"file's {drow[0]!r}")
            try:
                score = float(row[2])
            except ValueError:
                die(f"{ours}:{i}: anomaly_score {row[2]!r} is not a number")
            if not (math.isfinite(score) and 0.0 <= score <= 1.0):
                die(f"{ours}:{i}: anomaly_score {row[2]!r} is outside [0, 1]")


def published_detectors(nab_repo, subset, exclude):
    """Detectors under results/ that have result files for the whole subset."""
    found, skipped = [], {}
    root = os.path.join(nab_repo, "results")
    for det in sorted(os.listdir(root)):
        if not os.path.isdir(os.path.join(root, det)) or det.startswith("."):
            continue
        missing = [rel for rel in subset
                   if not os.path.isfile(published_result_path(nab_repo, det, rel))]
        if missing:
            skipped[det] = f"no results for {len(missing)} subset file(s), e.g. {missing[0]}"
        elif det == exclude:
            skipped[det] = "same name as --detector"
        else:
            found.append(det)
    if "null" not in found:
        die(f"{root}/null is missing or incomplete; NAB normalises against the null detector")
    return found, skipped


def published_result_path(nab_repo, det, rel):
    d, name = os.path.split(rel)
    return os.path.join(nab_repo, "results", det, d, f"{det}_{name}")


# --------------------------------------------------------------------------
# The NAB workspace and run
# --------------------------------------------------------------------------

def build_workspace(tmp, nab_repo, subset, windows, sources):
    """sources: {detector: function(rel) -> path of its result CSV for rel}."""
    shutil.copytree(os.path.join(nab_repo, "nab"), os.path.join(tmp, "nab"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    os.makedirs(os.path.join(tmp, "labels"))
    os.makedirs(os.path.join(tmp, "config"))
    with open(os.path.join(tmp, "labels", "combined_windows.json"), "w") as f:
        json.dump({rel: windows[rel] for rel in subset}, f, indent=2)
    shutil.copy(os.path.join(nab_repo, "config", "profiles.json"),
                os.path.join(tmp, "config", "profiles.json"))
    for rel in subset:
        dst = os.path.join(tmp, "data", rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy(os.path.join(nab_repo, "data", rel), dst)
        d, name = os.path.split(rel)
        for det, src in sources.items():
            dst = os.path.join(tmp, "results", det, d, f"{det}_{name}")
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy(src(rel), dst)


def import_nab(tmp):
    """Import the scorer from the workspace copy (never from the checkout)."""
    for mod in [m for m in sys.modules if m == "nab" or m.startswith("nab.")]:
        del sys.modules[mod]
    sys.path.insert(0, tmp)
    try:
        nab = importlib.import_module("nab")
        if os.path.dirname(os.path.dirname(os.path.abspath(nab.__file__))) != os.path.abspath(tmp):
            die(f"imported nab from {nab.__file__}, not from the temporary copy")
        return importlib.import_module("nab.runner")
    finally:
        sys.path.remove(tmp)


def run_nab(tmp, detectors, num_cpus):
    """NAB's run.py --optimize --score --normalize, in the workspace at tmp.

    Returns ({detector: {profile: normalised score}}, {detector: {profile:
    {"threshold":..., "score": raw}}}).
    """
    runner_mod = import_nab(tmp)
    runner = runner_mod.Runner(
        dataDir=os.path.join(tmp, "data"),
        resultsDir=os.path.join(tmp, "results"),
        labelPath=os.path.join(tmp, "labels", "combined_windows.json"),
        profilesPath=os.path.join(tmp, "config", "profiles.json"),
        thresholdPath=os.path.join(tmp, "config", "thresholds.json"),
        numCPUs=num_cpus)
    try:
        # NAB prints its progress to stdout; keep stdout for our table.
        with contextlib.redirect_stdout(sys.stderr):
            runner.initialize()
            thresholds = runner.optimize(detectors)
            runner.score(detectors, thresholds)
            runner.normalize()
    finally:
        runner.pool.close()
        runner.pool.join()
    with open(os.path.join(tmp, "results", "final_results.json")) as f:
        final = json.load(f)
    return final, thresholds


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Score a detector on a subset of NAB with NAB's own optimiser, "
                    "scorer and normaliser, and re-score NAB's published detectors "
                    "on the same subset for comparison.")
    p.add_argument("--nab-repo", required=True, metavar="PATH",
                   help="a checkout of the NAB repository (read only)")
    p.add_argument("--detector-results", required=True, metavar="DIR",
                   help="our detector's output: DIR/<NAB dir>/<data file>.csv with "
                        "columns timestamp,value,anomaly_score; the files present "
                        "define the subset")
    p.add_argument("--out", required=True, metavar="SCORES.json",
                   help="where to write the scores")
    p.add_argument("--detector", default="shadow",
                   help="name for our detector in NAB's tables (letters and digits "
                        "only; default: %(default)s)")
    p.add_argument("--num-cpus", type=int, default=1,
                   help="worker processes for NAB's scoring pool (default: %(default)s)")
    p.add_argument("--keep-workdir", action="store_true",
                   help="keep the temporary NAB workspace and print its path")
    args = p.parse_args(argv)
    # NAB's normaliser parses "<detector>_<profile>_scores.csv" by splitting
    # on "_" and matches profile names as substrings of that path.
    if not args.detector.isalnum() or any(pr in args.detector for pr in PROFILES):
        p.error("--detector must be letters and digits only")
    if args.detector == "null":
        p.error("--detector must not be \"null\" (NAB normalises against it)")
    if args.num_cpus < 1:
        p.error("--num-cpus must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    nab_repo = os.path.abspath(args.nab_repo)
    windows = check_nab_repo(nab_repo)
    subset = find_subset(args.detector_results, windows)
    validate_ours(args.detector_results, nab_repo, subset)
    published, skipped = published_detectors(nab_repo, subset, args.detector)
    for det, why in skipped.items():
        warn(f"not re-scoring published detector {det}: {why}")

    ours_dir = os.path.abspath(args.detector_results)
    sources = {args.detector: lambda rel: os.path.join(ours_dir, rel)}
    for det in published:
        sources[det] = (lambda d: lambda rel: published_result_path(nab_repo, d, rel))(det)

    tmp = tempfile.mkdtemp(prefix="nabscore-")
    try:
        build_workspace(tmp, nab_repo, subset, windows, sources)
        print(f"scoring {len(sources)} detectors on {len(subset)} NAB files "
              f"({sum(len(windows[r]) for r in subset)} anomaly windows)",
              file=sys.stderr, flush=True)
        final, thresholds = run_nab(tmp, list(sources), args.num_cpus)
    finally:
        if args.keep_workdir:
            print(f"NAB workspace kept at {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    with open(os.path.join(nab_repo, "results", "final_results.json")) as f:
        whole = json.load(f)

    def profiles_of(det):
        return {pr: final[det][pr] for pr in PROFILES}

    out = {
        "subset": subset,
        "anomaly_windows": sum(len(windows[r]) for r in subset),
        "detector": args.detector,
        "ours": profiles_of(args.detector),
        "published_on_subset": {det: profiles_of(det) for det in published},
        "published_whole_corpus": whole,
        # Subset-optimised thresholds and raw (unnormalised) scores, per profile.
        "thresholds": thresholds,
        "skipped_published": skipped,
    }
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2, sort_keys=False)

    rows = [(args.detector + " (ours)", out["ours"])] + \
           [(det, s) for det, s in out["published_on_subset"].items()]
    rows.sort(key=lambda r: r[1]["standard"], reverse=True)
    print(f"NAB scores on {len(subset)} files, ranked by the standard profile")
    print(f"{'rank':>4}  {'detector':<24} {'standard':>9} {'low_FP':>9} {'low_FN':>9}  "
          f"{'whole-corpus std':>16}")
    for i, (name, s) in enumerate(rows, 1):
        det = name.split(" ")[0]
        w = whole.get(det, {}).get("standard") if det != args.detector else None
        w = f"{w:16.2f}" if w is not None else f"{'-':>16}"
        print(f"{i:>4}  {name:<24} {s['standard']:9.2f} {s['reward_low_FP_rate']:9.2f} "
              f"{s['reward_low_FN_rate']:9.2f}  {w}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
