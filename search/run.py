"""``python -m search.run space=<name> [key=value ...]``: run a search, print and save its leaderboard.

Examples::

    python -m search.run                                   # the quick demo space on the built-in set
    python -m search.run space=aug_ablation data=/data/sketch trainable.epochs=8
    python -m search.run space=lr tune.num_samples=32 resources.gpu=0.5
    python -m search.run resume=true                       # continue the latest interrupted search
    python -m search.run ray.address=auto space=backbones  # join a running Ray cluster
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

from common.allocator import keep_freed_memory
from common.io import atomic_write_text, runs_dir
from search.config import RESUMABLE_KEYS, ConfigError, load_config, parse_overrides, read_config
from search.help import HELP_ARGS, usage
from search.leaderboard import print_leaderboard
from search.preflight import Preflight, preflight
from search.progress import setup_logging
from search.records import CONFIG_FILE, PLAN_FILE, STATE_FILE, list_experiments, search_dir
from search.report import search_page
from search.runner import SearchOutcome, run_search
from search.stages import run_stages

log = logging.getLogger("search.run")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: Arguments after the module name (default ``sys.argv[1:]``).

    Returns:
        0 on success, 1 when every trial failed, 2 on a usage error, 130 when interrupted (Ctrl-C).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in HELP_ARGS for a in argv):
        print(usage(argv))
        return 0
    setup_logging()
    keep_freed_memory()  # before the plan's probes time a step, and before Ray starts its workers
    try:
        cfg, resume = prepare(argv)
        setup_logging(int(cfg.verbose))
        checked = preflight(cfg)  # every mistake a user can make, before Ray or MLflow start
        if cfg.get("budget") and not resume:
            size_to_budget(cfg, checked)
    except (ConfigError, ValueError, OSError) as err:  # data errors are ValueErrors; a full disk an OSError
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        outcome = run_search(cfg, resume=resume, checked=checked)
    except FileExistsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_leaderboard(
        outcome.leaderboard,
        title=f"Leaderboard: {outcome.experiment} ({cfg.space})",
        metric=str(cfg.tune.metric),
    )
    if outcome.status == "interrupted":
        where(outcome, {})
        print(
            f"interrupted; continue it with: python -m search.run resume={outcome.experiment}",
            file=sys.stderr,
        )
        return 130
    if outcome.status == "failed":
        print(f"search failed: every trial failed. {failure_reason(outcome)}", file=sys.stderr)
        return 1
    results: dict[str, object] = {}
    code = 0
    try:
        run_stages([str(s) for s in cfg.stages], cfg, outcome, results)
    except (RuntimeError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        code = 1
    if code == 0:  # a failed stage's rerun reads them again
        _prune_frozen_caches()
    where(outcome, results)
    return code


def _prune_frozen_caches() -> None:
    """A finished flow's frozen-stage caches (trainables.frozen) are of no use to the next one."""
    from trainables.frozen import prune_frozen_caches

    removed, freed = prune_frozen_caches()
    if removed:
        log.info("removed %d frozen-stage caches (%.1f GB)", removed, freed / 1e9)


def prepare(argv: Sequence[str]) -> tuple[DictConfig, bool]:
    """The config to run and whether it resumes an earlier search.

    ``resume=true`` picks the most recent experiment under ``<runs>/search``, ``resume=<name>``
    that one; its saved config is used, with only ``ray.*`` and ``stages`` overridable.

    Raises:
        ConfigError: Bad overrides, or nothing to resume.
    """
    pairs = parse_overrides(argv)
    resume = dict(pairs).get("resume", False)
    if resume in (False, None, "false"):
        return load_config(pairs), False
    runs = runs_dir()
    experiments = list_experiments(runs)
    if resume is True or resume == "true":
        resumable = list_experiments(runs, resumable=True)
        if not resumable:
            raise ConfigError(f"resume=true but there is no search under {runs / 'search'} to resume "
                              "(failed searches are not resumed: start a new one)")  # fmt: skip
        name = resumable[0]
    else:
        name = str(resume)
        if name not in experiments:
            raise ConfigError(
                f"resume={name}: no such experiment under {runs / 'search'}; there are: {', '.join(experiments) or 'none'}"
            )
    cfg = read_config(search_dir(runs, name) / CONFIG_FILE)
    for key, value in pairs:
        if not any(key == k or key.startswith(k + ".") for k in RESUMABLE_KEYS):
            raise ConfigError(
                f"{key}: a resumed search runs its saved config; only {', '.join(RESUMABLE_KEYS)} may change. "
                "Start a new search (experiment=<new name>) to change what is searched"
            )
        if key != "resume":
            OmegaConf.update(cfg, key, value, merge=False)
    log.info("resuming experiment %s", name)
    return cfg, True


def where(outcome: SearchOutcome, results: Mapping[str, object]) -> None:
    """Where everything is, printed once at the end: only what exists."""
    rows: list[tuple[str, object]] = [(p.stem, p) for p in outcome.files if p.exists()]
    report = outcome.out_dir / "report.html"
    if report.exists():
        rows.append(("report", report))
    oof = results.get("oof")
    if oof is not None:
        rows.append(("oof artifacts", getattr(oof, "out_dir", "")))
    if "ensemble" in results:
        rows.append(("submission", results["ensemble"]))
    elif oof is not None:
        rows += [("submission", r.submission) for r in getattr(oof, "results", []) if r.submission][:1]
    if outcome.tracking_uri:
        uri = str(outcome.tracking_uri)
        if not uri.startswith(("http://", "https://")):
            rows.append(("mlflow", f"mlflow ui --backend-store-uri {uri}"))
        rows.append(("mlflow page", search_page(uri, outcome.parent_run_id) or uri))
    print("\nWhere everything is:")
    for name, path in rows:
        print(f"  {name + ':':<16} {path}")
    print(f"  {'trial-epochs:':<16} {outcome.trial_epochs}")


def size_to_budget(cfg: DictConfig, checked: Preflight) -> None:
    """``budget=90m``: choose trials, epochs, image size and top-k, and say so before starting."""
    from search.budget import apply_plan, fold_epoch_rows, plan_budget
    from search.cluster import local_slots

    plan = plan_budget(cfg, checked.n_train, checked.n_test, local_slots(cfg), fold_epoch_rows(cfg))
    apply_plan(cfg, plan)
    lines = plan.lines()
    print("\n".join(lines), flush=True)
    # Kept beside the leaderboard (and in MLflow and the report): the saved config holds what the
    # plan chose, this says why. Not over an experiment of the same name, which the search refuses.
    folder = search_dir(runs_dir(), str(cfg.experiment))
    if not (folder / STATE_FILE).exists():
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / PLAN_FILE, "\n".join(lines) + "\n")


def failure_reason(outcome: SearchOutcome) -> str:
    """The distinct errors of a failed search's trials, for its final message."""
    board = outcome.leaderboard
    errors = (
        [] if board.empty or "error" not in board else list(dict.fromkeys(e for e in board["error"] if e))
    )
    if not errors:
        return "No trial reported; see the errors above."
    shown = "\n".join(errors[:3]) + (f"\n... and {len(errors) - 3} other error(s)" if len(errors) > 3 else "")
    return f"The error{'s' if len(errors) > 1 else ''}:\n{shown}\nThe leaderboard is in {outcome.out_dir}"


if __name__ == "__main__":
    raise SystemExit(main())
