"""The `--copy-budget` option shared by `lab up` and `run`: how many copies per second each shadow port takes."""

from __future__ import annotations

from vmshadow.capture.shadow_port import DEFAULT_BUDGET

DEFAULT_COPY_BUDGET = f"{DEFAULT_BUDGET.pps}/{DEFAULT_BUDGET.burst}"
COPY_BUDGET_HELP = (
    "Copies per second each shadow port takes, in the kernel: PPS, PPS/BURST or off (every packet copied). "
    "Copies over it are shed and counted; live traffic always passes."
)
