"""Entry point of `deft` and `python -m deft_aoi.cli`: Ctrl-C is deft's from the first moment, imports included."""

from __future__ import annotations

import sys

from deft_aoi import interrupts


def main() -> None:
    interrupts.install()
    try:
        from deft_aoi.cli.app import main as run_app
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    run_app()


if __name__ == "__main__":
    main()
