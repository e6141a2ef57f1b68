"""The SSM family's tuning registrations: every kernel is listed with its shape tuple, and its default config
passes the tuner's own correctness gate (autotune.worker.run_request, gate only) at a small shape on the
reference backend, so a tuned study starts from a correct trial 0."""
import pytest
import torch

from tilekit.autotune.protocol import kernels
from tilekit.autotune.worker import run_request

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

CASES = {"selective_scan.fwd": ((1, 8, 40, 5), ("Bt", "Dm", "L", "N")),
         "selective_scan.bwd": ((1, 4, 70, 5), ("Bt", "Dm", "L", "N")),
         "ssd_scan.fwd": ((1, 40, 2, 8, 8, 16), ("Bt", "L", "H", "P", "N", "chunk")),
         "ssd_scan.bwd": ((1, 40, 2, 8, 8, 16), ("Bt", "L", "H", "P", "N", "chunk")),
         "ssd_scan.bwd_dc": ((1, 40, 2, 8, 8, 16), ("Bt", "L", "H", "P", "N", "chunk")),
         "ssd_scan.bwd_dstate": ((1, 40, 2, 8, 8, 16), ("Bt", "L", "H", "P", "N", "chunk")),
         "selective_state_update.main": ((3, 16, 8), ("Bt", "Dm", "N")),
         "ssd_state_update.main": ((3, 4, 8, 16), ("Bt", "H", "P", "N"))}


@pytest.mark.parametrize("kernel_id", sorted(CASES))
def test_default_config_passes_the_gate(kernel_id):
    shape, names = CASES[kernel_id]
    kernel = kernels()[kernel_id]
    assert kernel.shape_names == names
    config = kernel.default_config_for(shape, (), torch.float32, torch.device("cpu"))
    assert kernel.why_invalid(config, torch.float32) is None
    result = run_request({"kernel": kernel_id, "dtype": "float32", "device": "cpu", "shape": shape,
                          "config": config, "backend": "reference", "gate_only": True})
    assert result["status"] == "ok", result
