"""``python -m heat_module.cli ...`` runs the ``heat`` command."""

import sys

from heat_module.cli.main import main

sys.exit(main())
