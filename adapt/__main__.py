"""``python -m adapt ...`` is the ``adapt`` command (:mod:`adapt.cli`)."""
import sys

from adapt.cli import main

sys.exit(main())
