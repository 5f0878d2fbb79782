"""The local backend: an in-process PyTorch siamese classifier standing in for TAO Visual ChangeNet.

Only `runner` is imported here; it imports torch lazily, so `import deft_aoi.runners.local` is cheap.
"""

import os
import sys

# Every submodule that imports torch passes through here first. Before torch's first import, OpenMP
# threads are told to sleep rather than spin when idle: spinning makes this small CNN ~7x slower on a
# 2-core machine shared with any other busy process (measured), sleeping costs little on an idle one.
# An OMP_WAIT_POLICY the user set wins.
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from deft_aoi.runners.local.runner import LocalRunner, require_torch

__all__ = ["LocalRunner", "require_torch"]
