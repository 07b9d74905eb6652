"""``python -m clusterbench``: the command line, also as ``torchrun ... -m clusterbench run ...``."""

import sys

from clusterbench.cli import main

if __name__ == "__main__":
    sys.exit(main())
