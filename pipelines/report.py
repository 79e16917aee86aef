"""DVC stage `report`: results/*/ -> reports/<study>.md, reports/index.html, reports/figures/."""

import sys

from techbench.cli import main

if __name__ == "__main__":
    sys.exit(main(["report"]))
