"""
Print README's set-up commands (the first ``bash`` block under "## Set-up: two commands"), one
per line, comments dropped: .ci/run runs exactly these, verbatim, in a fresh environment.
"""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def setup_commands(readme=os.path.join(ROOT, "README.md")):
    text = open(readme, encoding="utf-8").read()
    section = re.search(r"^## Set-up: two commands\n(.*?)(?=^## )", text, re.M | re.S)
    if section is None:
        raise SystemExit("README.md has no '## Set-up: two commands' section")
    block = re.search(r"^```bash\n(.*?)^```", section.group(1), re.M | re.S)
    if block is None:
        raise SystemExit("README.md's set-up section has no bash block")
    commands = [line.strip() for line in block.group(1).splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    if len(commands) != 2:
        raise SystemExit(f"README.md's set-up block has {len(commands)} commands, not 2")
    return commands


if __name__ == "__main__":
    sys.stdout.write("\n".join(setup_commands()) + "\n")
