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
from collections.abc import Sequence

from omegaconf import DictConfig, OmegaConf

from common.io import runs_dir
from search.config import RESUMABLE_KEYS, ConfigError, load_config, parse_overrides, read_config
from search.help import HELP_ARGS, usage
from search.leaderboard import print_leaderboard
from search.preflight import Preflight, preflight
from search.progress import setup_logging
from search.records import CONFIG_FILE, list_experiments, search_dir
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
    try:
        cfg, resume = prepare(argv)
        setup_logging(int(cfg.verbose))
        checked = preflight(cfg)  # every mistake a user can make, before Ray or MLflow start
        if cfg.get("budget") and not resume:
            size_to_budget(cfg, checked)
    except (ConfigError, ValueError, FileNotFoundError) as err:  # data errors are ValueErrors too
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        outcome = run_search(cfg, resume=resume, checked=checked)
    except FileExistsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report(outcome, cfg)
    if outcome.status == "interrupted":
        print(
            f"interrupted; continue it with: python -m search.run resume={outcome.experiment}",
            file=sys.stderr,
        )
        return 130
    if outcome.status == "failed":
        print(f"search failed: every trial failed. {failure_reason(outcome)}", file=sys.stderr)
        return 1
    try:
        run_stages([str(s) for s in cfg.stages], cfg, outcome)
    except (RuntimeError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


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


def report(outcome: SearchOutcome, cfg: DictConfig) -> None:
    """Print the final leaderboard and where everything was written (only files that exist)."""
    metric = str(cfg.tune.metric)
    print()
    print_leaderboard(
        outcome.leaderboard, title=f"Leaderboard: {outcome.experiment} ({cfg.space})", metric=metric
    )
    print()
    for path in outcome.files:
        if path.exists():
            print(f"{path.stem + ':':<22} {path}")
    if outcome.status != "failed":
        print(f"ray experiment:        {outcome.ray_path}")
    if outcome.tracking_uri:
        print(f"mlflow store:          {outcome.tracking_uri}   (parent run {outcome.parent_run_id})")
        if not str(outcome.tracking_uri).startswith(("http://", "https://")):
            print(f"open it with:          mlflow ui --backend-store-uri {outcome.tracking_uri}")
        page = search_page(outcome.tracking_uri, outcome.parent_run_id)
        print(f"open it at:            {page or outcome.tracking_uri}")
    print(f"trial-epochs spent:    {outcome.trial_epochs}")


def size_to_budget(cfg: DictConfig, checked: Preflight) -> None:
    """``budget=90m``: choose trials, epochs, image size and top-k, and say so before starting."""
    from search.budget import apply_plan, plan_budget
    from search.cluster import local_slots

    plan = plan_budget(cfg, checked.n_train, checked.n_test, local_slots(cfg))
    apply_plan(cfg, plan)
    for line in plan.lines():
        print(line, flush=True)


def failure_reason(outcome: SearchOutcome) -> str:
    """The distinct errors of a failed search's trials, for its final message."""
    board = outcome.leaderboard
    errors = [] if board.empty or "error" not in board else list(dict.fromkeys(e for e in board["error"] if e))
    if not errors:
        return "No trial reported; see the errors above."
    shown = "\n".join(errors[:3]) + (f"\n... and {len(errors) - 3} other error(s)" if len(errors) > 3 else "")
    return f"The error{'s' if len(errors) > 1 else ''}:\n{shown}\nThe leaderboard is in {outcome.out_dir}"


if __name__ == "__main__":
    raise SystemExit(main())
