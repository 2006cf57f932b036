#!/usr/bin/env python3
"""Reference forecasts from statsforecast and Prophet for the shadow forecast benchmark.

The Rust harness writes a SPLITS.json (series, rolling origins, horizon,
season); this script fits each baseline model on ``values[:origin]`` and writes
the p10/p50/p90 forecasts of the next ``horizon`` points to FORECASTS.json.
Scoring is done on the Rust side.

Models and settings
-------------------
* statsforecast models (SeasonalNaive, AutoETS, AutoARIMA, AutoTheta, MSTL) are
  called through their ``forecast(y, h, level=[80])`` method with
  ``season_length=season``; the 80% interval gives p10 (lo-80) and p90 (hi-80),
  the mean gives p50. MSTL uses ``AutoETS(model="ZZN")`` as trend forecaster and
  is skipped (error "no seasonality") when season == 1.
* Prophet: ``interval_width=0.8``, ``daily_seasonality=True`` and
  ``weekly_seasonality=True``, other settings at their defaults;
  yhat_lower/yhat/yhat_upper give p10/p50/p90. Weekly seasonality is forced on
  because Prophet's "auto" drops it when the history is under two weeks, which
  would change the model between rolling origins of one series; with it the
  elb_request_count_8c0756 split reproduces the published reference (MASE
  0.845; 0.852 without it). Its intervals are sampled, so numpy's global seed
  is fixed before every fit.
* Everything runs single-threaded (statsforecast's n_jobs=1 equivalent: we
  call the models directly, one fit at a time).
* Each fit runs in a forked child and is stopped after ``--fit-timeout``
  seconds (default 600); the split is then recorded with the error "timed
  out", never silently dropped. statsforecast's AutoARIMA can run for hours
  on some series even with the restriction below (ec2_cpu_utilization_53ea38
  gave no result in 20 minutes here).

AutoARIMA with long seasons (season 288)
----------------------------------------
A seasonal AR/MA term at lag s makes the ARIMA state vector about s (P or Q
= 1) to 2*s (= 2) long, and statsforecast's exact initialisation of its
covariance (getQ0, Gardner 1980) needs memory of order r**4/8 doubles for a
state of length r. Measured on elb_request_count_8c0756 (3744 training
points, season 288) on the 2-core dev machine (shared with a build):
  * statsforecast defaults: no result after 900 s (killed);
  * approximation=True (CSS during the search): MemoryError (std::bad_alloc)
    in getQ0 during the order search;
  * max_P=0, max_Q=0: 3.3 s, ARIMA(1,1,2), MASE 0.822 (the published
    reference for that split is 0.822).
So for season > ARIMA_SEASONAL_ARMA_MAX_SEASON (48) this script passes
``max_P=0, max_Q=0``: no seasonal AR/MA terms, while the seasonal difference D
is still chosen by statsforecast's seasonal test and the non-seasonal orders
by its usual stepwise search. For season <= 48 AutoARIMA runs with its
defaults. ``--arima-full-seasonal`` lifts the restriction (needs tens of GB
and hours at season 288).
"""

import argparse
import json
import logging
import math
import os
import platform
import sys
import time
import warnings

import numpy as np
import pandas as pd

ALL_MODELS = ["SeasonalNaive", "AutoETS", "AutoARIMA", "AutoTheta", "MSTL", "Prophet"]
LEVEL = 80  # lo-80 -> p10, hi-80 -> p90
# Above this season length AutoARIMA gets max_P=max_Q=0 (see the top of the file).
ARIMA_SEASONAL_ARMA_MAX_SEASON = 48
PROPHET_SEED = 0


def log(msg, quiet=False):
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def die(msg):
    print(f"baselines.py: error: {msg}", file=sys.stderr)
    sys.exit(2)


# --------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------

def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def load_splits(path):
    """Load and validate SPLITS.json; exits with a clear message on bad input."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except OSError as e:
        die(f"cannot read splits file {path}: {e}")
    except json.JSONDecodeError as e:
        die(f"{path} is not valid JSON: {e}")
    if not isinstance(doc, dict) or not isinstance(doc.get("series"), list):
        die(f"{path}: expected an object with a 'series' list")
    q = doc.get("quantiles", [0.1, 0.5, 0.9])
    if q != [0.1, 0.5, 0.9]:
        die(f"{path}: only quantiles [0.1, 0.5, 0.9] are supported, got {q!r}")
    names = set()
    for i, s in enumerate(doc["series"]):
        where = f"{path}: series[{i}]"
        if not isinstance(s, dict):
            die(f"{where} is not an object")
        for key in ("name", "timestamps", "values", "step", "season", "horizon", "origins"):
            if key not in s:
                die(f"{where} is missing '{key}'")
        name = s["name"]
        where = f"{path}: series '{name}'"
        if not isinstance(name, str) or not name:
            die(f"{path}: series[{i}] has an empty or non-string name")
        if name in names:
            die(f"{where} appears twice")
        names.add(name)
        ts, vals = s["timestamps"], s["values"]
        if not isinstance(ts, list) or not isinstance(vals, list):
            die(f"{where}: timestamps and values must be lists")
        if len(ts) != len(vals):
            die(f"{where}: {len(ts)} timestamps but {len(vals)} values")
        if not all(_is_int(t) for t in ts):
            die(f"{where}: timestamps must be integer unix seconds")
        if any(b <= a for a, b in zip(ts, ts[1:])):
            die(f"{where}: timestamps must be strictly increasing")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                   and math.isfinite(v) for v in vals):
            die(f"{where}: values must all be finite numbers (null/NaN found)")
        for key in ("step", "season", "horizon"):
            if not _is_int(s[key]) or s[key] < 1:
                die(f"{where}: '{key}' must be a positive integer, got {s[key]!r}")
        origins = s["origins"]
        if not isinstance(origins, list) or not origins:
            die(f"{where}: 'origins' must be a non-empty list")
        for o in origins:
            if not _is_int(o) or o < 2 or o > len(vals):
                die(f"{where}: origin {o!r} outside [2, {len(vals)}]")
    return doc


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------

class SkipModel(Exception):
    """Raised for a model that does not apply to a split (recorded as error)."""


class FitTimeout(Exception):
    """A fit that gave no result within --fit-timeout (recorded as error)."""


def run_limited(timeout, fn, *args):
    """fn(*args) in a forked child, stopped after ``timeout`` seconds (no limit
    when timeout <= 0). Exceptions in the child are raised again here."""
    if timeout <= 0:
        return fn(*args)
    import multiprocessing
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)

    def child():
        try:
            send.send(("ok", fn(*args)))
        except SkipModel as e:
            send.send(("skip", str(e)))
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            send.send(("error", f"{type(e).__name__}: {e}"))

    proc = ctx.Process(target=child, daemon=True)
    proc.start()
    try:
        if not recv.poll(timeout):
            raise FitTimeout(f"timed out: no result after {timeout:g} s (stopped)")
        kind, value = recv.recv()
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
    if kind == "ok":
        return value
    if kind == "skip":
        raise SkipModel(value)
    raise RuntimeError(value)


def make_statsforecast_model(name, season, arima_full_seasonal):
    from statsforecast.models import (AutoARIMA, AutoETS, AutoTheta, MSTL,
                                      SeasonalNaive)
    if name == "SeasonalNaive":
        return SeasonalNaive(season_length=season)
    if name == "AutoETS":
        return AutoETS(season_length=season)
    if name == "AutoTheta":
        return AutoTheta(season_length=season)
    if name == "AutoARIMA":
        if arima_full_seasonal or season <= ARIMA_SEASONAL_ARMA_MAX_SEASON:
            return AutoARIMA(season_length=season)
        return AutoARIMA(season_length=season, max_P=0, max_Q=0)
    if name == "MSTL":
        if season <= 1:
            raise SkipModel("no seasonality")
        return MSTL(season_length=season,
                    trend_forecaster=AutoETS(model="ZZN"))
    raise ValueError(f"unknown model {name}")


def forecast_statsforecast(name, y, h, season, arima_full_seasonal):
    model = make_statsforecast_model(name, season, arima_full_seasonal)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model.forecast(y=np.asarray(y, dtype=np.float64), h=h, level=[LEVEL])
    return out[f"lo-{LEVEL}"], out["mean"], out[f"hi-{LEVEL}"]


def forecast_prophet(train_ts, y, future_ts):
    from prophet import Prophet
    train = pd.DataFrame({"ds": pd.to_datetime(np.asarray(train_ts), unit="s"),
                          "y": np.asarray(y, dtype=np.float64)})
    future = pd.DataFrame({"ds": pd.to_datetime(np.asarray(future_ts), unit="s")})
    np.random.seed(PROPHET_SEED)  # Prophet samples its uncertainty intervals
    m = Prophet(interval_width=LEVEL / 100.0, daily_seasonality=True,
                weekly_seasonality=True)
    m.fit(train)
    fc = m.predict(future)
    return fc["yhat_lower"].to_numpy(), fc["yhat"].to_numpy(), fc["yhat_upper"].to_numpy()


def future_timestamps(ts, origin, h, step):
    """Timestamps of the h points after the origin; where the series ends
    before origin+h, continue on the nominal step."""
    fut = list(ts[origin:origin + h])
    last = fut[-1] if fut else ts[origin - 1]
    while len(fut) < h:
        last += step
        fut.append(last)
    return fut


def run_one(model, series, origin, arima_full_seasonal):
    """Return (p10, p50, p90) lists for one model on one split; raises on failure."""
    h, season = series["horizon"], series["season"]
    y = series["values"][:origin]
    if model == "Prophet":
        ts = series["timestamps"]
        p10, p50, p90 = forecast_prophet(
            ts[:origin], y, future_timestamps(ts, origin, h, series["step"]))
    else:
        p10, p50, p90 = forecast_statsforecast(model, y, h, season, arima_full_seasonal)
    arrays = [np.asarray(a, dtype=np.float64) for a in (p10, p50, p90)]
    for a in arrays:
        if a.shape != (h,):
            raise RuntimeError(f"model returned {a.shape} values, expected ({h},)")
        if not np.all(np.isfinite(a)):
            raise RuntimeError("model returned non-finite forecasts")
    return [a.tolist() for a in arrays]


def warm_up(models):
    """Run each statsforecast model once on a tiny series so that numba's
    one-off JIT compilation (a few seconds) is not charged to the first split's
    "seconds"."""
    y = 10.0 + np.sin(np.arange(48) * (2 * np.pi / 4)) + 0.1 * np.arange(48)
    for name in models:
        if name != "Prophet":
            try:
                forecast_statsforecast(name, y, 4, 4, False)
            except Exception:
                pass  # a real failure will be reported on the real data


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def versions():
    import prophet
    import statsforecast
    return {"statsforecast": statsforecast.__version__,
            "prophet": prophet.__version__,
            "python": platform.python_version(),
            "numpy": np.__version__,
            "pandas": pd.__version__}


def write_json(path, doc):
    """Write atomically so a reader never sees a half-written file."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, allow_nan=False)
    os.replace(tmp, path)


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Fit statsforecast/Prophet baselines on the splits written by "
                    "the Rust forecast benchmark and write their p10/p50/p90 "
                    "forecasts as JSON.")
    p.add_argument("--splits", required=True, metavar="SPLITS.json",
                   help="input splits file written by the Rust harness")
    p.add_argument("--out", required=True, metavar="FORECASTS.json",
                   help="output forecasts file (rewritten after every fit, so a "
                        "partial run leaves the finished results)")
    p.add_argument("--models", default=",".join(ALL_MODELS),
                   help="comma-separated subset of %(default)s")
    p.add_argument("--arima-full-seasonal", action="store_true",
                   help="let AutoARIMA search seasonal AR/MA orders even when "
                        "season > %d (very slow and memory-hungry for long "
                        "seasons)" % ARIMA_SEASONAL_ARMA_MAX_SEASON)
    p.add_argument("--fit-timeout", type=float, default=600.0, metavar="SECONDS",
                   help="stop a fit after this long and record it as timed out "
                        "(default %(default)s; 0 for no limit)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress lines on stderr")
    args = p.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in ALL_MODELS]
    if unknown or not models:
        p.error(f"unknown model(s) {unknown}; choose from {','.join(ALL_MODELS)}")
    args.models = models
    return args


def main(argv=None):
    args = parse_args(argv)
    doc = load_splits(args.splits)

    # cmdstanpy logs every Prophet fit at INFO level and prophet complains at
    # import that plotly is missing; keep stderr readable. cmdstanpy installs
    # its own INFO handler at its first fit unless the logger already has a
    # handler, hence the NullHandler (warnings still reach stderr via logging's
    # last-resort handler). prophet sets its level when imported.
    logging.getLogger("cmdstanpy").addHandler(logging.NullHandler())
    logging.getLogger("cmdstanpy").setLevel(logging.WARNING)
    logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)
    out = {"versions": versions(), "results": []}
    logging.getLogger("prophet").setLevel(logging.WARNING)
    warm_up(args.models)

    total = sum(len(s["origins"]) for s in doc["series"]) * len(args.models)
    done = 0
    t_start = time.time()
    for s in doc["series"]:
        for origin in s["origins"]:
            for model in args.models:
                done += 1
                t0 = time.perf_counter()
                error = None
                p10 = p50 = p90 = []
                try:
                    p10, p50, p90 = run_limited(args.fit_timeout, run_one, model, s,
                                                origin, args.arima_full_seasonal)
                except SkipModel as e:
                    error = str(e)
                except Exception as e:  # a failing model is recorded, never dropped
                    error = f"{type(e).__name__}: {e}"
                secs = time.perf_counter() - t0
                out["results"].append({
                    "series": s["name"], "origin": origin, "model": model,
                    "p10": p10, "p50": p50, "p90": p90,
                    "seconds": round(secs, 3), "error": error})
                write_json(args.out, out)
                status = "ok" if error is None else f"error: {error}"
                log(f"[{done}/{total}] {s['name']} origin={origin} {model} "
                    f"{secs:.1f}s {status} (elapsed {time.time() - t_start:.0f}s)",
                    args.quiet)
    failed = sum(r["error"] is not None for r in out["results"])
    log(f"wrote {len(out['results'])} results ({failed} with errors) to {args.out}",
        args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
