"""DVC stage `pretrain@<name>`: train the source model <name> and save it to <paths.models>/<name>/."""

import sys

from techbench.cli import main

if __name__ == "__main__":
    sys.exit(main(["pretrain", sys.argv[1]]))
