"""``python -m cdc_iceberg <command>``: the operator's commands.

python -m cdc_iceberg status [--table NAME] [--json]
"""

from __future__ import annotations

import sys

from cdc_iceberg import status

COMMANDS = {"status": status.main}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m cdc_iceberg {{{','.join(COMMANDS)}}} [--help]", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
