"""`python -m hf_unlearnable ...` = the `hf-unlearnable` command; also what `accelerate launch -m hf_unlearnable` and
`torchrun -m hf_unlearnable` start in every process."""

from .cli import main

raise SystemExit(main())
