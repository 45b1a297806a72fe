"""Lets accelerate run real FSDP2 on a machine without GPUs, for tests only (on PYTHONPATH).

accelerate 1.15 turns FSDP into plain DDP when it runs on CPU (state.py only upgrades
MULTI_GPU-like types to FSDP); telling it the gloo backend is a MULTI_GPU one gives real
FSDP2 (DTensor parameters, sharded state dicts) over gloo on CPU.
"""

import os

if os.environ.get("DISTILL_TEST_FSDP_ON_CPU") == "1":
    os.environ["ACCELERATE_USE_CPU"] = "false"
    os.environ["ACCELERATE_TORCH_DEVICE"] = "cpu"
    import accelerate.state as _state
    from accelerate.utils import DistributedType as _Type

    def _gloo(self, cpu=False, sagemaker_dp=False, backend=None):
        return "gloo", _Type.MULTI_GPU

    _state.PartialState._prepare_backend = _gloo
