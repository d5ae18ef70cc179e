"""`python -m iceprod.client.cli`: the `iceprod` command."""

import sys

from iceprod.client.cli import main

sys.exit(main())
