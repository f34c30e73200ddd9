"""`python -m reg2rg_lib.cli`: the same as the `reg2rg` command."""

import sys

from reg2rg_lib.cli.main import main

sys.exit(main())
