"""`python -m hf_unlearnable.cli ...` = the `hf-unlearnable` command (as `python -m hf_unlearnable`)."""

from . import main

raise SystemExit(main())
