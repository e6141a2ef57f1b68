"""ssm: Mamba-1 selective_scan (+ backward), selective_state_update, Mamba-2 ssd_scan (+ backward) and ssd_state_update. ``kernels`` holds the DSL kernels and their
tunables, ``op`` the torch ops, ``tuning`` their tuning declarations (shape tuple ``Bt,Dm,L,N``). See
README.md."""
from .op import kernel_example, selective_scan, selective_scan_reference  # noqa: F401
from .state_update import selective_state_update, ssd_state_update  # noqa: F401
from .ssd import ssd_scan  # noqa: F401
from . import tuning  # noqa: F401  (registers selective_scan.fwd and selective_scan.bwd with the autotuner)
