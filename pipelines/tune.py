"""DVC stage `tune@<name>`: Optuna-tune the techniques listed in tuning.<name>, re-run the best over seeds."""

import sys

from techbench.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", sys.argv[1]]))
