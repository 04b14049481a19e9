"""Benchmark: ensemble weight search at the reference scale (10 models x 15,021 rows x 500 classes).

Generates float16 probabilities with realistic accuracies (0.60-0.85 per model, errors correlated
across models, confidence roughly calibrated), saves them as .npy and memory-maps them, as the
ensemble reads OOF artifacts. Then, each in a fresh subprocess so peak memory is its own:

* ``float64-loop``: the straightforward implementation: per weight vector, loop over models,
  upcast each to float64, accumulate, argmax;
* ``float32-dense``: the whole stack copied to one float32 array, one ``tensordot`` per vector;
* ``float16-chunked``: dense blend in row blocks straight from the float16 memory maps;
* ``candidates``: this package (``ProbStack`` + ``Objective``): per-row candidate lists with an
  exactness bound, dense fallback for unresolved rows.

For each: time per evaluation, 500 Optuna TPE trials (same sampler settings everywhere, one BLAS
thread everywhere, as the package's searches run), and the peak resident memory it added
(``ru_maxrss`` growth; includes the memory-mapped pages it touched), split at the end into heap
and mapped file pages. Targets: 500 trials <= 60 s on 2 cores; peak <= 2x the float16 OOF size.

Usage::

    python bench/bench_ensemble.py                        # reference scale, ~20 min on 2 cores:
                                                          # the two slow baselines run 500 trials too
    python bench/bench_ensemble.py --baseline-trials 50   # same, slow baselines cut to 50 trials (~3 min)
    python bench/bench_ensemble.py --small                # 10 x 3,000 x 100, ~1 min
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ACCURACIES = np.linspace(0.60, 0.85, 10)


# ------------------------------------------------------------------------------------ data


def generate(data: Path, n_models: int, n_rows: int, n_classes: int, seed: int = 0) -> None:
    """Write m{i}.npy (float16 probabilities) and targets.npy under ``data``.

    The probabilities come from :func:`ensemble.synthetic.make_probs`: correlated errors, exact
    per-model accuracies spread over ``ACCURACIES``, roughly calibrated confidence.
    """
    from ensemble.synthetic import make_probs

    data.mkdir(parents=True, exist_ok=True)
    accs = np.interp(np.linspace(0, 1, n_models), [0, 1], [ACCURACIES[0], ACCURACIES[-1]])
    models, y = make_probs(n_rows, n_classes, list(accs), seed=seed, dtype="float16")
    for m, probs in enumerate(models):
        np.save(data / f"m{m}.npy", probs)
    np.save(data / "targets.npy", y)
    (data / "done").write_text("ok")


def load(data: Path) -> tuple[list[np.ndarray], np.ndarray]:
    files = sorted(data.glob("m*.npy"), key=lambda p: int(p.stem[1:]))
    return [np.load(f, mmap_mode="r") for f in files], np.load(data / "targets.npy")


# ---------------------------------------------------------------------------- implementations


def _float64_loop(models: list[np.ndarray], y: np.ndarray):
    def evaluate(w: np.ndarray) -> float:
        acc = np.zeros(models[0].shape, dtype=np.float64)
        for wm, p in zip(w, models, strict=True):
            acc += wm * p.astype(np.float64)
        return float(np.mean(acc.argmax(axis=1) == y))

    return evaluate


def _float32_dense(models: list[np.ndarray], y: np.ndarray):
    stacked = np.stack([np.asarray(p, dtype=np.float32) for p in models])

    def evaluate(w: np.ndarray) -> float:
        return float(np.mean(np.tensordot(w.astype(np.float32), stacked, axes=1).argmax(axis=1) == y))

    return evaluate


def _float16_chunked(models: list[np.ndarray], y: np.ndarray, chunk: int = 1024):
    def evaluate(w: np.ndarray) -> float:
        correct = 0
        for s in range(0, len(y), chunk):
            acc = np.zeros((min(chunk, len(y) - s), models[0].shape[1]), dtype=np.float32)
            for wm, p in zip(w.astype(np.float32), models, strict=True):
                acc += wm * p[s : s + chunk].astype(np.float32)
            correct += int(np.sum(acc.argmax(axis=1) == y[s : s + chunk]))
        return correct / len(y)

    return evaluate


def _tpe(evaluate, n_models: int, n_trials: int, seed: int = 0) -> float:
    """Seconds for ``n_trials`` multivariate-TPE trials over normalised weights."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True)
    study = optuna.create_study(direction="maximize", sampler=sampler)

    def objective(trial: optuna.Trial) -> float:
        raw = np.array([trial.suggest_float(f"w{m}", 0.0, 1.0) for m in range(n_models)])
        return evaluate(raw / raw.sum() if raw.sum() > 0 else np.full(n_models, 1.0 / n_models))

    start = time.perf_counter()
    study.optimize(objective, n_trials=n_trials)
    return time.perf_counter() - start


def _time_evals(evaluate, n_models: int, repeats: int) -> float:
    ws = np.random.default_rng(1).dirichlet(np.ones(n_models), size=repeats + 1)
    evaluate(ws[0])  # warm-up: page in the memory maps, build caches
    times = []
    for w in ws[1:]:
        start = time.perf_counter()
        evaluate(w)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _rss_split_mb() -> tuple[float, float]:
    """Current (anonymous, file-backed) resident memory: heap vs memory-mapped file pages."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                fields[key] = int(value.split()[0]) / 1024
    return fields.get("RssAnon", float("nan")), fields.get("RssFile", float("nan"))


def worker(kind: str, data: Path, trials: int, repeats: int) -> dict:
    # Import everything first, so the baseline reading covers code and only data counts after it.
    import optuna  # noqa: F401
    import scipy.optimize  # noqa: F401

    from ensemble import BayesianEnsemble, Objective, ProbStack, create_method

    create_method("stacking")  # loads scikit-learn and every method module
    base = _maxrss_mb()
    anon0, file0 = _rss_split_mb()
    models, y = load(data)
    n_models = len(models)
    out: dict = {"kind": kind}
    start = time.perf_counter()
    if kind == "candidates":
        stack = ProbStack(models)
        objective = Objective(stack, y, "accuracy")  # builds the candidate lists: one pass
        out["setup_s"] = time.perf_counter() - start
        out["candidate_width"] = int(stack.candidates.idx.shape[1])
        out["candidate_mb"] = stack.candidates.nbytes / 2**20
        out["eval_s"] = _time_evals(lambda w: objective(w[None])[0], n_models, repeats)
        W = np.random.default_rng(2).dirichlet(np.ones(n_models), size=50)
        t = time.perf_counter()
        objective(W)
        out["eval_batch50_s"] = (time.perf_counter() - t) / 50
        out["dense_rows_per_eval"] = stack.n_dense_rows / objective.n_evals
        t = time.perf_counter()
        BayesianEnsemble(n_trials=trials, random_state=0).fit(stack, y)
        out["tpe_s"] = time.perf_counter() - t
        out["peak_added_mb"] = _maxrss_mb() - base
        anon, file = _rss_split_mb()
        out["anon_added_mb"], out["file_added_mb"] = anon - anon0, file - file0
        for name, kw in (("caruana", {}), ("genetic", {}), ("logloss", {})):
            t = time.perf_counter()
            create_method(name, **kw).fit(stack, y)
            out[f"{name}_fit_s"] = time.perf_counter() - t
        out["peak_all_fits_mb"] = _maxrss_mb() - base
    else:
        make = {
            "float64-loop": _float64_loop,
            "float32-dense": _float32_dense,
            "float16-chunked": _float16_chunked,
        }[kind]
        evaluate = make(models, y)
        out["setup_s"] = time.perf_counter() - start
        out["eval_s"] = _time_evals(evaluate, n_models, repeats)
        if trials:
            out["tpe_s"] = _tpe(evaluate, n_models, trials)
        out["peak_added_mb"] = _maxrss_mb() - base
        anon, file = _rss_split_mb()
        out["anon_added_mb"], out["file_added_mb"] = anon - anon0, file - file0
    out["tpe_trials"] = trials
    return out


def check(data: Path) -> dict:
    """Agreement of the candidate argmax with the float64 loop over random weights."""
    from ensemble import ProbStack

    models, y = load(data)
    stack = ProbStack(models)
    reference = _float64_loop(models, y)
    W = np.random.default_rng(3).dirichlet(np.ones(len(models)), size=5)
    labels = stack.predict_many(W)
    mismatched = 0
    for w, lab in zip(W, labels, strict=True):
        acc = np.zeros(models[0].shape)
        for wm, p in zip(w, models, strict=True):
            acc += wm * p.astype(np.float64)
        mismatched += int(np.sum(acc.argmax(1) != lab))
        assert abs(reference(w) - np.mean(lab == y)) < 1e-3
    return {
        "kind": "check",
        "rows_compared": int(labels.size),
        "mismatched": mismatched,
        "dense_rows": stack.n_dense_rows,
    }


# ------------------------------------------------------------------------------------- driver


def _run_worker(args: list[str]) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [sys.executable, __file__, *args], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Run every implementation in its own process on the same data and print the comparison."""
    args = _parser().parse_args(argv)

    n_models, n_rows, n_classes = (10, 3000, 100) if args.small else (10, 15021, 500)
    data = args.data or Path(tempfile.gettempdir()) / f"sketchsearch_bench_{n_models}x{n_rows}x{n_classes}"
    if args.worker:
        from threadpoolctl import threadpool_limits

        # Every implementation gets the BLAS setting the package's searches use (one thread).
        with threadpool_limits(limits=1, user_api="blas"):
            result = (
                check(data)
                if args.worker == "check"
                else worker(args.worker, data, args.trials, args.repeats)
            )
        print(json.dumps(result))
        return 0

    if not (data / "done").exists():
        print(
            f"generating {n_models} x {n_rows} x {n_classes} float16 probabilities in {data} ...", flush=True
        )
        start = time.perf_counter()
        generate(data, n_models, n_rows, n_classes)
        print(f"  {time.perf_counter() - start:.1f} s", flush=True)
    models, y = load(data)
    f16_mb = _describe_models(models, y)

    baseline_trials = args.trials if args.baseline_trials is None else args.baseline_trials
    plan = [
        ("float64-loop", baseline_trials, 3),
        ("float32-dense", args.trials, 10),
        ("float16-chunked", baseline_trials, 5),
        ("candidates", args.trials, args.repeats),
    ]
    results = {}
    for kind, trials, repeats in plan:
        print(f"running {kind} ({trials} TPE trials) ...", flush=True)
        results[kind] = _run_worker(
            ["--worker", kind, "--trials", str(trials), "--repeats", str(repeats), "--data", str(data)]
            + (["--small"] if args.small else [])
        )
    agreement = _run_worker(["--worker", "check", "--data", str(data)] + (["--small"] if args.small else []))

    _print_results(results, agreement, f16_mb)
    return 0


def _parser() -> argparse.ArgumentParser:
    """The command line: sizes, trials, where to cache the data, and the hidden worker flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="10 x 3,000 x 100 instead of 10 x 15,021 x 500")
    p.add_argument("--trials", type=int, default=500)
    p.add_argument(
        "--baseline-trials",
        type=int,
        default=None,
        help="TPE trials for the two slow baselines (default --trials)",
    )
    p.add_argument("--data", type=Path, help="where to cache the generated probabilities")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--repeats", type=int, default=20, help=argparse.SUPPRESS)
    return p


def _describe_models(models: list[np.ndarray], y: np.ndarray) -> float:
    """Print the generated models' accuracy and confidence; return their float16 size in MB."""
    f16_mb = sum(m.nbytes for m in models) / 2**20
    accs = [float(np.mean(np.asarray(m).argmax(1) == y)) for m in models]
    conf = [float(np.asarray(m[:3000]).max(1).astype(np.float32).mean()) for m in models]
    print(f"models: accuracy {min(accs):.3f}-{max(accs):.3f}, mean top prob {min(conf):.3f}-{max(conf):.3f}")
    print(f"float16 OOF size {f16_mb:.1f} MB (target: peak <= {2 * f16_mb:.0f} MB), {os.cpu_count()} CPUs")
    return f16_mb


def _print_results(results: dict[str, dict], agreement: dict, f16_mb: float) -> None:
    """The comparison table, the candidate implementation's details, and whether it met its targets."""
    base = results["float64-loop"]
    print()
    print("peak: growth of ru_maxrss during the trials (heap + touched memory-mapped pages);")
    print("heap / mapped: resident anonymous / file-backed memory added, at the end of the trials")
    print(
        f"{'implementation':<16} {'eval ms':>9} {'x faster':>9} {'TPE s':>8} {'trials':>7} "
        f"{'peak MB':>8} {'x f16':>6} {'heap MB':>8} {'mapped MB':>10}"
    )
    for kind, r in results.items():
        tpe = r.get("tpe_s")
        print(
            f"{kind:<16} {1e3 * r['eval_s']:9.2f} {base['eval_s'] / r['eval_s']:9.1f} "
            f"{'-' if tpe is None else f'{tpe:8.1f}':>8} {r['tpe_trials']:7d} {r['peak_added_mb']:8.0f} "
            f"{r['peak_added_mb'] / f16_mb:6.2f} {r['anon_added_mb']:8.0f} {r['file_added_mb']:10.0f}"
        )
    c = results["candidates"]
    print()
    print(
        f"candidates: setup (two passes, candidate lists) {c['setup_s']:.2f} s, "
        f"width {c['candidate_width']}, {c['candidate_mb']:.1f} MB"
    )
    print(
        f"candidates: batched eval (50 vectors) {1e3 * c['eval_batch50_s']:.2f} ms per vector; "
        f"dense-fallback rows per eval {c['dense_rows_per_eval']:.2f}"
    )
    print(
        f"candidates: full fits caruana {c['caruana_fit_s']:.1f} s, genetic {c['genetic_fit_s']:.1f} s, "
        f"logloss {c['logloss_fit_s']:.2f} s; peak after them {c['peak_all_fits_mb']:.0f} MB"
    )
    print(
        f"exactness: {agreement['mismatched']} of {agreement['rows_compared']} labels differ from the float64 loop"
    )
    tpe_ok = c["tpe_s"] <= 60
    mem_ok = c["peak_added_mb"] <= 2 * f16_mb
    print(
        f"targets: 500 trials <= 60 s: {'met' if tpe_ok else 'MISSED'} ({c['tpe_s']:.1f} s); "
        f"peak <= 2x float16 size: {'met' if mem_ok else 'MISSED'} ({c['peak_added_mb']:.0f} MB)"
    )


if __name__ == "__main__":
    sys.exit(main())
