"""DVC stage `study@<name>`: train every technique x seed of the study, then export results/<name>/."""

import sys

from techbench.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", sys.argv[1]]))
