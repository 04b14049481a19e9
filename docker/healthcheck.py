"""``python docker/healthcheck.py URL [--timeout S]``: exit 0 when URL answers 2xx, else 1 with the reason.

The compose services' health check (the image has no curl). Standard library only, so it runs in
any container of the project image before anything else is importable.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence


def check(url: str, timeout: float = 5.0) -> str | None:
    """GET ``url``; None when it answered 2xx, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            if 200 <= response.status < 300:
                return None
            return f"HTTP {response.status}"
    except urllib.error.HTTPError as err:
        return f"HTTP {err.code}: {err.read(300).decode(errors='replace').strip()}"
    except (OSError, ValueError) as err:  # refused, timed out, unresolvable, malformed URL
        return f"{type(err).__name__}: {err}"


def main(argv: Sequence[str] | None = None) -> int:
    """Check one URL.

    Args:
        argv: ``URL [--timeout S]`` (default ``sys.argv[1:]``).

    Returns:
        0 when healthy, 1 when not (the reason goes to stderr).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="e.g. http://127.0.0.1:5000/health")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer")
    args = parser.parse_args(argv)
    problem = check(args.url, args.timeout)
    if problem:
        print(f"unhealthy: {args.url}: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
