"""`python -m shipledger.cli`: the same as the `shipledger` command."""

import sys

from shipledger.cli import main

sys.exit(main())
